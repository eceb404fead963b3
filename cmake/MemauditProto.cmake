# memaudit_proto_library(<target> PROTOS <file.proto>... [GRPC] [ROOT dir] [DEPS targets...])
#
# Runs protoc (and grpc_cpp_plugin with GRPC) explicitly. CMake 3.25's
# protobuf_generate() places outputs unpredictably and cannot read protos from
# third_party/grpc-proto, so the commands are spelled out here. PROTOS are
# relative to ROOT (default ${CMAKE_SOURCE_DIR}/proto); outputs land under
# ${CMAKE_BINARY_DIR}/proto with the same relative paths.
find_program(PROTOC_EXECUTABLE protoc REQUIRED)

function(memaudit_proto_library target)
  cmake_parse_arguments(ARG "GRPC" "ROOT" "PROTOS;DEPS" ${ARGN})
  set(proto_root ${CMAKE_SOURCE_DIR}/proto)
  if(ARG_ROOT)
    set(proto_root ${ARG_ROOT})
  endif()
  set(out_root ${CMAKE_BINARY_DIR}/proto)
  set(sources)
  foreach(proto ${ARG_PROTOS})
    string(REGEX REPLACE "\\.proto$" "" stem ${proto})
    set(outs ${out_root}/${stem}.pb.cc ${out_root}/${stem}.pb.h)
    set(cmd ${PROTOC_EXECUTABLE} -I${proto_root} -I${CMAKE_SOURCE_DIR}/proto --cpp_out=${out_root})
    if(ARG_GRPC)
      find_program(GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)
      list(APPEND outs ${out_root}/${stem}.grpc.pb.cc ${out_root}/${stem}.grpc.pb.h)
      list(APPEND cmd --grpc_out=${out_root} --plugin=protoc-gen-grpc=${GRPC_CPP_PLUGIN})
    endif()
    add_custom_command(
      OUTPUT ${outs}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${out_root}
      COMMAND ${cmd} ${proto_root}/${proto}
      DEPENDS ${proto_root}/${proto}
      COMMENT "protoc ${proto}"
      VERBATIM)
    list(APPEND sources ${outs})
  endforeach()
  add_library(${target} STATIC ${sources})
  # Generated code keeps protoc's warnings to itself (memaudit_apply_warnings).
  set_target_properties(${target} PROPERTIES MEMAUDIT_GENERATED ON)
  # protoc gives every .pb.cc file-scope arrays of the same names, so the
  # generated files are compiled one by one, never as a unity batch.
  set_target_properties(${target} PROPERTIES UNITY_BUILD OFF)
  target_include_directories(${target} PUBLIC ${out_root})
  target_link_libraries(${target} PUBLIC protobuf::libprotobuf ${ARG_DEPS})
  set_target_properties(${target} PROPERTIES POSITION_INDEPENDENT_CODE ON)
endfunction()
