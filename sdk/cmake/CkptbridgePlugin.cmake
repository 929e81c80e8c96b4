# ckptbridge_add_plugin(<name> SOURCES <src>... [VERSION <semver>] [LIBS <lib>...])
#
# Builds an adapter plugin the one way the host expects it:
#   - a MODULE library named libckptbridge_<name>.so (the host only considers
#     files with that prefix when it scans a directory);
#   - hidden visibility and a linker version script, so the only exported
#     symbol is ckptbridge_plugin_entry_v1 (no std:: template instantiations
#     leaking out to clash with the host's or another plugin's);
#   - -Wl,--no-undefined: a missing symbol is a link error on the author's
#     machine, not a load failure on the user's;
#   - CKPTBRIDGE_PLUGIN_VERSION defined to VERSION (default: the project's).
# First-party plugins use this function exactly as third parties do.

function(ckptbridge_add_plugin name)
  cmake_parse_arguments(ARG "" "VERSION;OUTPUT_DIRECTORY" "SOURCES;LIBS" ${ARGN})
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
endfunction()
