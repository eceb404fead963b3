#include "proto/request_parsing.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/message.h>
#include <google/protobuf/stubs/common.h>
#include <google/protobuf/unknown_field_set.h>
#include <grpcpp/support/proto_buffer_reader.h>
#include <grpcpp/support/proto_buffer_writer.h>

#include <climits>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::UnknownField;
using google::protobuf::UnknownFieldSet;

// Protobuf's own nesting limit.
constexpr int kMaxDepth = 100;

// The path of the first string field under `bytes` (a serialized `type`)
// that is not UTF-8, reading the wire format without protobuf's check.
std::optional<std::string> FirstInvalidString(const Descriptor& type, const std::string& bytes,
                                              const std::string& prefix, int depth) {
  if (depth > kMaxDepth) return std::nullopt;
  UnknownFieldSet fields;
  if (!fields.ParseFromString(bytes)) return std::nullopt;
  std::map<int, int> seen;  // repeated fields: the index of each value
  for (int i = 0; i < fields.field_count(); ++i) {
    const UnknownField& field = fields.field(i);
    const FieldDescriptor* descriptor = type.FindFieldByNumber(field.number());
    const int index = seen[field.number()]++;
    if (descriptor == nullptr || field.type() != UnknownField::TYPE_LENGTH_DELIMITED) continue;
    std::string path = prefix + descriptor->name();
    if (descriptor->is_repeated()) path += "[" + std::to_string(index) + "]";
    const std::string& value = field.length_delimited();
    if (descriptor->type() == FieldDescriptor::TYPE_STRING &&
        !google::protobuf::internal::IsStructurallyValidUTF8(value.data(),
                                                             static_cast<int>(value.size()))) {
      return path;
    }
    if (descriptor->type() == FieldDescriptor::TYPE_MESSAGE) {
      if (auto inner =
              FirstInvalidString(*descriptor->message_type(), value, path + ".", depth + 1)) {
        return inner;
      }
    }
  }
  return std::nullopt;
}

// Why `buffer` did not parse as `message`'s type.
grpc::Status Diagnose(const google::protobuf::MessageLite& message, grpc::ByteBuffer* buffer) {
  const auto* full = dynamic_cast<const google::protobuf::Message*>(&message);
  if (full == nullptr) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "the message is not a valid " + message.GetTypeName());
  }
  const Descriptor& type = *full->GetDescriptor();
  std::vector<grpc::Slice> slices;
  std::string serialized;
  if (buffer->Dump(&slices).ok()) {
    for (const grpc::Slice& slice : slices) {
      serialized.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
    }
  }
  if (std::optional<std::string> path = FirstInvalidString(type, serialized, "", 0)) {
    return grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        *path + ": not valid UTF-8 (text fields must be; " + type.full_name() + ")");
  }
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                      "the message is not a valid " + type.full_name() + " (malformed protobuf)");
}

}  // namespace

grpc::Status grpc::SerializationTraits<grpc::protobuf::MessageLite, void>::Serialize(
    const grpc::protobuf::MessageLite& message, grpc::ByteBuffer* buffer, bool* own_buffer) {
  return grpc::GenericSerialize<grpc::ProtoBufferWriter, grpc::protobuf::MessageLite>(
      message, buffer, own_buffer);
}

grpc::Status grpc::SerializationTraits<grpc::protobuf::MessageLite, void>::Deserialize(
    grpc::ByteBuffer* buffer, grpc::protobuf::MessageLite* message) {
  if (buffer == nullptr) return grpc::Status(grpc::StatusCode::INTERNAL, "No payload");
  grpc::Status result;
  {
    grpc::ProtoBufferReader reader(buffer);
    if (!reader.status().ok()) return reader.status();
    google::protobuf::io::CodedInputStream decoder(&reader);
    decoder.SetTotalBytesLimit(INT_MAX);
    if (!message->ParseFromCodedStream(&decoder)) result = Diagnose(*message, buffer);
  }
  buffer->Clear();
  return result;
}
