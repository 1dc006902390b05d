# Finds the header-only dependencies (Debian packages here; a carried folder on machines without apt).
# A missing one stops the configure step and names the Debian package that provides it.

function(bam_find_header var header package)
  find_path(${var} ${header} HINTS ${BAM_DEPS_DIR} ${BAM_DEPS_DIR}/include PATHS /usr/include /usr/local/include)
  if(NOT ${var})
    message(FATAL_ERROR "bam: cannot find <${header}>. Install it with: apt-get install ${package}"
                        " (or point -DBAM_DEPS_DIR at a folder that holds it)")
  endif()
endfunction()

bam_find_header(BAM_FMT_INCLUDE fmt/format.h libfmt-dev)
bam_find_header(BAM_DOCTEST_INCLUDE doctest/doctest.h doctest-dev)
bam_find_header(BAM_JSON_INCLUDE nlohmann/json.hpp nlohmann-json3-dev)
bam_find_header(BAM_CLI11_INCLUDE CLI/CLI.hpp libcli11-dev)
# Debian puts stb in /usr/include/stb; include it as <stb_image.h>.
find_path(BAM_STB_DIR stb_image.h HINTS ${BAM_DEPS_DIR}/stb ${BAM_DEPS_DIR} PATHS /usr/include/stb)
if(NOT BAM_STB_DIR)
  message(FATAL_ERROR "bam: cannot find <stb_image.h>. Install it with: apt-get install libstb-dev")
endif()

# fmt: the system's compiled library where there is one (libfmt-dev), so that the ~125 translation
# units that format an error message do not each compile fmt's implementation (about half of such a
# unit's compile time); header-only with a carried folder (-DBAM_DEPS_DIR, a machine without apt),
# where there is no library to link.
add_library(bam_fmt INTERFACE)
if(NOT BAM_DEPS_DIR)
  find_package(fmt CONFIG QUIET)
endif()
if(TARGET fmt::fmt)
  target_link_libraries(bam_fmt INTERFACE fmt::fmt)
  message(STATUS "bam: fmt ${fmt_VERSION}, the compiled library")
else()
  target_include_directories(bam_fmt SYSTEM INTERFACE ${BAM_FMT_INCLUDE})
  target_compile_definitions(bam_fmt INTERFACE FMT_HEADER_ONLY=1)
  message(STATUS "bam: fmt header-only (${BAM_FMT_INCLUDE})")
endif()

add_library(bam_third_party INTERFACE)
target_include_directories(bam_third_party SYSTEM INTERFACE ${BAM_JSON_INCLUDE} ${BAM_CLI11_INCLUDE} ${BAM_STB_DIR})

add_library(bam_doctest INTERFACE)
target_include_directories(bam_doctest SYSTEM INTERFACE ${BAM_DOCTEST_INCLUDE})

find_package(ZLIB)
if(NOT ZLIB_FOUND)
  message(FATAL_ERROR "bam: cannot find zlib. Install it with: apt-get install zlib1g-dev")
endif()

# OpenBLAS is never a dependency of the engine: only the GEMM benchmark uses it as a yardstick.
find_path(BAM_CBLAS_INCLUDE cblas.h PATHS /usr/include/x86_64-linux-gnu/openblas-pthread /usr/include/openblas /usr/include)
find_library(BAM_OPENBLAS_LIB openblas)
