# Components: one static library per folder of core/ (and server/, client/),
# includes written from the repository root ("core/spectra/arnoldi.h"), and a
# build step that fails when a file includes a header of a component its own
# does not depend on (directly or through others). The dependencies are the
# ones declared to memaudit_component: the CMake graph and the include check
# cannot disagree.
#
#   memaudit_component(<target> [FOLDER <path>] [SOURCES <files>...]
#                      [DEPS <component targets>...] [LIBS <libraries>...]
#                      [PRIVATE_LIBS <libraries>...])
#
# FOLDER (relative to the repository root) is the component's layer: every
# .h/.cc under it (or, for a path naming a file stem such as
# core/verdict/verdict_rules, the files of that stem) belongs to the
# component. DEPS are other components (linked PUBLIC, and what the layer may
# include); LIBS are third-party or generated libraries (PUBLIC).

function(memaudit_component target)
  cmake_parse_arguments(ARG "" "FOLDER" "SOURCES;DEPS;LIBS;PRIVATE_LIBS" ${ARGN})
  if(ARG_SOURCES)
    add_library(${target} STATIC ${ARG_SOURCES})
    target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR})
    target_link_libraries(${target} PUBLIC ${ARG_DEPS} ${ARG_LIBS} PRIVATE ${ARG_PRIVATE_LIBS})
  else()  # headers only
    add_library(${target} INTERFACE)
    target_include_directories(${target} INTERFACE ${PROJECT_SOURCE_DIR})
    target_link_libraries(${target} INTERFACE ${ARG_DEPS} ${ARG_LIBS})
  endif()
  if(ARG_FOLDER)
    memaudit_layer(${target} FOLDER ${ARG_FOLDER} DEPS ${ARG_DEPS})
  endif()
endfunction()

# memaudit_layer(<target> FOLDER <path> DEPS <component targets>...): declares
# an existing target's folder as a layer (for folders whose libraries are
# declared with add_library, e.g. server/).
function(memaudit_layer target)
  cmake_parse_arguments(ARG "" "FOLDER" "DEPS" ${ARGN})
  set_property(GLOBAL APPEND PROPERTY MEMAUDIT_LAYER_TARGETS ${target})
  set_property(GLOBAL PROPERTY MEMAUDIT_LAYER_FOLDER_${target} ${ARG_FOLDER})
  set_property(GLOBAL PROPERTY MEMAUDIT_LAYER_DEPS_${target} "${ARG_DEPS}")
endfunction()

# Called once, after every component is declared: writes the layer table
# and adds the check as a dependency of every component.
function(memaudit_check_layering)
  get_property(targets GLOBAL PROPERTY MEMAUDIT_LAYER_TARGETS)
  set(table "")
  set(sources "")
  foreach(target IN LISTS targets)
    get_property(folder GLOBAL PROPERTY MEMAUDIT_LAYER_FOLDER_${target})
    get_property(deps GLOBAL PROPERTY MEMAUDIT_LAYER_DEPS_${target})
    set(dep_folders "")
    foreach(dep IN LISTS deps)
      get_property(dep_folder GLOBAL PROPERTY MEMAUDIT_LAYER_FOLDER_${dep})
      if(dep_folder)
        list(APPEND dep_folders ${dep_folder})
      endif()
    endforeach()
    list(JOIN dep_folders "," dep_text)
    string(APPEND table "${folder}|${target}|${dep_text}\n")
    if(IS_DIRECTORY ${PROJECT_SOURCE_DIR}/${folder})
      file(GLOB_RECURSE files CONFIGURE_DEPENDS
        ${PROJECT_SOURCE_DIR}/${folder}/*.h ${PROJECT_SOURCE_DIR}/${folder}/*.cc)
    else()
      file(GLOB files CONFIGURE_DEPENDS
        ${PROJECT_SOURCE_DIR}/${folder}.h ${PROJECT_SOURCE_DIR}/${folder}.cc)
    endif()
    list(APPEND sources ${files})
  endforeach()
  set(table_file ${PROJECT_BINARY_DIR}/memaudit_layers.txt)
  file(WRITE ${table_file}.tmp "${table}")
  file(COPY_FILE ${table_file}.tmp ${table_file} ONLY_IF_DIFFERENT)
  set(stamp ${PROJECT_BINARY_DIR}/memaudit_layering.stamp)
  add_custom_command(OUTPUT ${stamp}
    COMMAND ${CMAKE_COMMAND} -DSOURCE_DIR=${PROJECT_SOURCE_DIR} -DTABLE=${table_file}
            -DSTAMP=${stamp} -P ${PROJECT_SOURCE_DIR}/cmake/CheckLayering.cmake
    DEPENDS ${sources} ${table_file} ${PROJECT_SOURCE_DIR}/cmake/CheckLayering.cmake
    COMMENT "Checking that includes follow the components' declared dependencies"
    VERBATIM)
  add_custom_target(memaudit_layering DEPENDS ${stamp})
  foreach(target IN LISTS targets)
    get_target_property(type ${target} TYPE)
    if(NOT type STREQUAL "INTERFACE_LIBRARY")
      add_dependencies(${target} memaudit_layering)
    endif()
  endforeach()
endfunction()

# One warnings policy: -Wall -Wextra (unused parameters allowed: interface
# overrides and callbacks name what they ignore), -Werror with
# MEMAUDIT_WERROR (CI). memaudit_apply_warnings() links it into every
# library and executable declared under the given folders, tests and
# benchmarks included; generated protobuf code is left alone.
add_library(memaudit_warnings INTERFACE)
target_compile_options(memaudit_warnings INTERFACE
  -Wall -Wextra -Wno-unused-parameter $<$<BOOL:${MEMAUDIT_WERROR}>:-Werror>)
# GCC 12 reports out-of-bounds copies inside libstdc++'s own std::string
# code at -O2 (GCC bugs 105329, 105651: e.g. `std::string(...) + "..."`),
# depending on what else is inlined: warnings still, never errors there.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  target_compile_options(memaudit_warnings INTERFACE
    -Wno-error=array-bounds -Wno-error=stringop-overflow -Wno-error=restrict)
endif()

function(memaudit_apply_warnings)
  foreach(dir IN LISTS ARGN)
    get_property(targets DIRECTORY ${dir} PROPERTY BUILDSYSTEM_TARGETS)
    foreach(target IN LISTS targets)
      get_target_property(type ${target} TYPE)
      get_target_property(generated ${target} MEMAUDIT_GENERATED)
      if(type MATCHES "^(STATIC_LIBRARY|EXECUTABLE)$" AND NOT generated)
        target_link_libraries(${target} PRIVATE memaudit_warnings)
      endif()
    endforeach()
    get_property(subdirs DIRECTORY ${dir} PROPERTY SUBDIRECTORIES)
    if(subdirs)
      memaudit_apply_warnings(${subdirs})
    endif()
  endforeach()
endfunction()

# LibTorch's headers precompiled once (GCC): every target that links
# LibTorch reuses memaudit_runtime's precompiled header, which halves a
# translation unit's compile time (14 s to 7 s for core/model/sampler.cc on
# the 2-core build machine; docs/GUIDE.md "Build and test times"). The
# header holds what nearly every such file includes; what only some need
# (the TorchScript JIT) stays out, since a bigger header costs every file
# that loads it. Off for clang, which refuses a header whose command-line
# macros differ, and with MEMAUDIT_PCH=OFF.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  option(MEMAUDIT_PCH "Precompile LibTorch's headers once for every target that uses them" ON)
else()
  set(MEMAUDIT_PCH OFF)
endif()

# A header GCC cannot use (a macro or flag that differs from the one it was
# built with) is a warning, an error in CI, not a silent full parse. The
# header is valid only where the command-line macros match, so the host and
# every reuser get those that some imported libraries push onto their
# consumers: -pthread (_REENTRANT; gRPC's targets add it) and -DNOMINMAX
# (Debian 13's Abseil/protobuf add it to whatever links the API protos; a
# Windows macro, inert here).
set(MEMAUDIT_PCH_FLAGS -Winvalid-pch -pthread -DNOMINMAX)

# Whether `target` links LibTorch, directly or through its dependencies.
# Only this project's targets are followed (imported ones, such as
# Abseil's hundreds, are leaves: torch is recognised by name), and each
# answer is kept, so the walk visits every target once.
function(memaudit_links_torch target out)
  get_property(known GLOBAL PROPERTY MEMAUDIT_LINKS_TORCH_${target} SET)
  if(known)
    get_property(answer GLOBAL PROPERTY MEMAUDIT_LINKS_TORCH_${target})
    set(${out} ${answer} PARENT_SCOPE)
    return()
  endif()
  set_property(GLOBAL PROPERTY MEMAUDIT_LINKS_TORCH_${target} OFF)  # a cycle ends here
  get_target_property(type ${target} TYPE)
  set(libraries "")
  if(NOT type STREQUAL "INTERFACE_LIBRARY")
    get_target_property(direct ${target} LINK_LIBRARIES)
    if(direct)
      list(APPEND libraries ${direct})
    endif()
  endif()
  get_target_property(interface ${target} INTERFACE_LINK_LIBRARIES)
  if(interface)
    list(APPEND libraries ${interface})
  endif()
  set(answer OFF)
  foreach(library IN LISTS libraries)
    string(REGEX REPLACE "^\\$<LINK_ONLY:(.*)>$" "\\1" library "${library}")
    if(library STREQUAL "torch")
      set(answer ON)
      break()
    endif()
    if(TARGET ${library})
      get_target_property(imported ${library} IMPORTED)
      if(NOT imported)
        memaudit_links_torch(${library} found)
        if(found)
          set(answer ON)
          break()
        endif()
      endif()
    endif()
  endforeach()
  set_property(GLOBAL PROPERTY MEMAUDIT_LINKS_TORCH_${target} ${answer})
  set(${out} ${answer} PARENT_SCOPE)
endfunction()

# Gives every library and executable under the given folders that links
# LibTorch the shared precompiled header (not those with the target property
# MEMAUDIT_NO_PCH: the header holds only for the flags it was built with).
function(memaudit_apply_torch_pch)
  if(NOT MEMAUDIT_PCH OR NOT TARGET memaudit_runtime)
    return()
  endif()
  get_target_property(hosted memaudit_runtime PRECOMPILE_HEADERS)
  if(NOT hosted)
    target_precompile_headers(memaudit_runtime PRIVATE
      <ATen/ATen.h> <c10/core/GradMode.h> <torch/csrc/autograd/autograd.h>)
    target_compile_options(memaudit_runtime PRIVATE ${MEMAUDIT_PCH_FLAGS})
  endif()
  foreach(dir IN LISTS ARGN)
    get_property(targets DIRECTORY ${dir} PROPERTY BUILDSYSTEM_TARGETS)
    foreach(target IN LISTS targets)
      get_target_property(type ${target} TYPE)
      get_target_property(generated ${target} MEMAUDIT_GENERATED)
      get_target_property(no_pch ${target} MEMAUDIT_NO_PCH)
      if(type MATCHES "^(STATIC_LIBRARY|EXECUTABLE)$" AND NOT generated AND NOT no_pch
         AND NOT target STREQUAL "memaudit_runtime")
        memaudit_links_torch(${target} uses_torch)
        if(uses_torch)
          target_precompile_headers(${target} REUSE_FROM memaudit_runtime)
          target_compile_options(${target} PRIVATE ${MEMAUDIT_PCH_FLAGS})
        endif()
      endif()
    endforeach()
    get_property(subdirs DIRECTORY ${dir} PROPERTY SUBDIRECTORIES)
    if(subdirs)
      memaudit_apply_torch_pch(${subdirs})
    endif()
  endforeach()
endfunction()
