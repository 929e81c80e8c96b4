# ckptbridge_add_plugin(<name> SOURCES <src>... [VERSION <semver>] [LIBS <lib>...]
#                       [OUTPUT_DIRECTORY <dir>] [NO_CHECK])
#
# Builds an adapter plugin the one way the host expects it:
#   - a MODULE library named libckptbridge_<name>.so (the host only considers
#     files with that prefix when it scans a directory);
#   - hidden visibility and a linker version script, so the only exported
#     symbol is ckptbridge_plugin_entry_v1 (no std:: template instantiations
#     leaking out to clash with the host's or another plugin's);
#   - -Wl,--no-undefined: a missing symbol is a link error on the author's
#     machine, not a load failure on the user's;
#   - CKPTBRIDGE_PLUGIN_VERSION defined to VERSION (default: the project's);
#   - a CTest test `plugin_check_<name>` running `ckptbridge plugins check` on
#     the built file (the conformance kit), unless NO_CHECK is given. It takes
#     effect where testing is enabled (enable_testing() or include(CTest)
#     before this call). The host binary is the ckptbridge::ckptbridge target
#     of an installed SDK, or the `ckptbridge` target of the host's own build.
# First-party plugins use this function exactly as third parties do.

function(ckptbridge_add_plugin name)
  cmake_parse_arguments(ARG "NO_CHECK" "VERSION;OUTPUT_DIRECTORY" "SOURCES;LIBS" ${ARGN})
  if(NOT ARG_SOURCES)
    message(FATAL_ERROR "ckptbridge_add_plugin(${name}): SOURCES is required")
  endif()
  if(NOT ARG_VERSION)
    set(ARG_VERSION ${PROJECT_VERSION})
  endif()
  # The version script lives next to this file, wherever it is installed.
  set(map ${CMAKE_CURRENT_FUNCTION_LIST_DIR}/ckptbridge_plugin.map)
  set(target ckptbridge_plugin_${name})
  add_library(${target} MODULE ${ARG_SOURCES})
  target_link_libraries(${target} PRIVATE ckptbridge::sdk ${ARG_LIBS})
  target_compile_definitions(${target} PRIVATE CKPTBRIDGE_PLUGIN_VERSION="${ARG_VERSION}")
  set_target_properties(${target} PROPERTIES
    PREFIX ""
    OUTPUT_NAME libckptbridge_${name}
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    LINK_DEPENDS ${map})
  if(ARG_OUTPUT_DIRECTORY)
    set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${ARG_OUTPUT_DIRECTORY})
  elseif(DEFINED CKPTBRIDGE_PLUGIN_OUTPUT_DIR)
    set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${CKPTBRIDGE_PLUGIN_OUTPUT_DIR})
  endif()
  # Sanitized builds keep the sanitizer runtime's symbols undefined in the
  # module (the host provides them), so --no-undefined only applies to
  # ordinary builds.
  if(NOT CKPTBRIDGE_SANITIZE)
    target_link_options(${target} PRIVATE LINKER:--no-undefined)
  endif()
  target_link_options(${target} PRIVATE
    LINKER:--exclude-libs,ALL
    LINKER:--version-script=${map})

  if(NOT ARG_NO_CHECK)
    if(TARGET ckptbridge::ckptbridge)
      set(host ckptbridge::ckptbridge)
    elseif(TARGET ckptbridge)
      set(host ckptbridge)
    else()
      message(FATAL_ERROR "ckptbridge_add_plugin(${name}): no ckptbridge host to run the "
                          "conformance check with; find_package(ckptbridge_sdk) first, or pass NO_CHECK")
    endif()
    add_test(NAME plugin_check_${name}
             COMMAND ${host} plugins check $<TARGET_FILE:${target}>)
    # The check loads exactly this file; a plugin path from the environment
    # must not change what it sees.
    set_tests_properties(plugin_check_${name} PROPERTIES
      ENVIRONMENT "CKPTBRIDGE_PLUGIN_PATH="
      LABELS plugin_check)
  endif()
endfunction()
