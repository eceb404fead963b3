// config.pbtxt text → ParseModelConfig → ValidateModelConfig. Both must
// return a Status for any text; a config that validates must have a sample
// of 1 to 2^24 elements, and must survive a print/parse round trip
// unchanged and still valid.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/checkpoint/model_config.h"
#include "fuzz/fuzz_check.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/message_differencer.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  QuietProtobufLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<memaudit::v1::ModelConfig> config =
      memaudit::ParseModelConfig(text, "config.pbtxt");
  FUZZ_LOG_STATUS(config.status());
  if (!config.ok()) {
    FUZZ_CHECK(config.status().code() == absl::StatusCode::kInvalidArgument, "%s",
               config.status().ToString().c_str());
    return 0;
  }
  const absl::Status valid = memaudit::ValidateModelConfig(*config, "config.pbtxt");
  FUZZ_LOG_STATUS(valid);
  if (!valid.ok()) {
    FUZZ_CHECK(valid.code() == absl::StatusCode::kInvalidArgument, "%s", valid.ToString().c_str());
    return 0;
  }
  const int64_t numel = memaudit::SampleNumel(*config);
  FUZZ_CHECK(numel >= 1 && numel <= (int64_t{1} << 24), "sample numel %lld",
             static_cast<long long>(numel));

  std::string printed;
  FUZZ_CHECK(google::protobuf::TextFormat::PrintToString(*config, &printed), "print failed");
  absl::StatusOr<memaudit::v1::ModelConfig> again = memaudit::ParseModelConfig(printed, "printed");
  FUZZ_CHECK(again.ok(), "%s", again.status().ToString().c_str());
  FUZZ_CHECK(google::protobuf::util::MessageDifferencer::Equals(*config, *again),
             "round trip changed the config:\n%s", printed.c_str());
  const absl::Status still_valid = memaudit::ValidateModelConfig(*again, "printed");
  FUZZ_CHECK(still_valid.ok(), "%s", still_valid.ToString().c_str());
  return 0;
}
