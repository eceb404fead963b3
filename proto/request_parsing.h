// How memaudit's gRPC code reads messages: gRPC's protobuf parsing, except
// that a message that does not parse is answered INVALID_ARGUMENT naming the
// field, not gRPC's INTERNAL with an empty message. Protobuf refuses a
// proto3 string that is not UTF-8 before any handler runs, so a raw client
// (Python, grpcurl) that sent one learned nothing from the answer.
//
// The generated handlers and stubs (de)serialize through
// grpc::SerializationTraits<grpc::protobuf::MessageLite>. This header
// declares an explicit specialization of it and is force-included
// (-include) into the generated *.grpc.pb.cc of memaudit_api_proto; the
// members are defined, not inline, in request_parsing.cc, so the linker
// takes them over the generic inline ones wherever else gRPC's headers
// instantiate them (e.g. the health stubs). Serializing is gRPC's; parsing
// that succeeds is gRPC's, at the same cost.
#ifndef MEMAUDIT_PROTO_REQUEST_PARSING_H_
#define MEMAUDIT_PROTO_REQUEST_PARSING_H_

#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/status.h>

template <>
class grpc::SerializationTraits<grpc::protobuf::MessageLite, void> {
 public:
  static grpc::Status Serialize(const grpc::protobuf::MessageLite& message,
                                grpc::ByteBuffer* buffer, bool* own_buffer);
  // As gRPC's GenericDeserialize; when the bytes do not parse, INVALID_ARGUMENT
  // "<field path>: not valid UTF-8 (text fields must be; <type>)" for the
  // first string field that is not UTF-8 (e.g. "conditions[1].prompt"),
  // else "the message is not a valid <type> (malformed protobuf)".
  static grpc::Status Deserialize(grpc::ByteBuffer* buffer, grpc::protobuf::MessageLite* message);
};

#endif  // MEMAUDIT_PROTO_REQUEST_PARSING_H_
