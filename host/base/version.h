// host/base/version.h - the version of this ckptbridge build.
#ifndef CKPTBRIDGE_HOST_BASE_VERSION_H_
#define CKPTBRIDGE_HOST_BASE_VERSION_H_

namespace ckptbridge {

// Semver of the host, from the CMake project version.
inline constexpr const char* kVersion = CKPTBRIDGE_VERSION;

}  // namespace ckptbridge

#endif  // CKPTBRIDGE_HOST_BASE_VERSION_H_
