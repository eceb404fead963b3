// Checks a TorchScript archive (model.pt, text_encoder.pt, vae_decoder.pt)
// or a torch.save file (reference.pt, null_condition.pt) before LibTorch
// reads it: its pickles, its code, and its storages against the records
// that hold their bytes.
//
// Why: both are zips whose pickles (data.pkl for a module's state or the
// saved object, constants.pkl for the tensors a module's code embeds) name each
// storage by a record key and an element count. LibTorch (1.13 and 2.x)
// sizes the storage from that count and fills it from the record, without
// comparing the two: a truncated record, or a count larger than the record,
// gives a storage whose last bytes lie past its buffer. The first read of
// them (a probe forward, the copy to a GPU inside torch::jit::load) reads
// the heap beyond the buffer or faults, taking the server down. Shapes
// against storages are checked after the load (CheckDenseTensor); this
// checks storages against records, which LibTorch's loaded module no longer
// shows.
#ifndef MEMAUDIT_CORE_RUNTIME_ARCHIVE_CHECK_H_
#define MEMAUDIT_CORE_RUNTIME_ARCHIVE_CHECK_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace memaudit {

// A zip file's central directory (zip64 included): what it says, without
// reading any record.
struct ZipDirectory {
  std::string first;                      // the first record's name ("model/data.pkl")
  std::map<std::string, uint64_t> sizes;  // uncompressed size by name ("model/data/0")
};

// NOT_FOUND when the file cannot be opened; INVALID_ARGUMENT naming `path`
// when it is not a zip file, its directory is damaged or names a record
// twice.
absl::StatusOr<ZipDirectory> ReadZipDirectory(const std::string& path);

// First walks every pickle of the archive (*.pkl, *.debug_pkl) without
// running it: LibTorch's unpickler allocates whatever length a pickle
// states before reading it, and pops its stack without checking it holds
// anything, so each length must fit the bytes left and each opcode must
// find the items and the mark it takes. Bounds the nesting of the code
// TorchScript compiles (code/**.py: statements of at most 32 KiB, brackets
// and indentation at most 4,096 deep), through which its parser recurses on
// the loading thread's stack (ModelRegistry loads on a thread whose stack
// holds that). Then runs LibTorch's own unpickler
// over data.pkl and constants.pkl without reading any tensor data, and
// checks that every storage they declare (element count × element size)
// fits its record. INVALID_ARGUMENT naming `path` and what is wrong: the
// pickle and the byte, or the record and both sizes, a storage whose record
// is missing, or a pickle LibTorch cannot parse; the code file and the
// line. Reads only the zip directory, the pickles and the code.
absl::Status CheckArchive(const std::string& path);

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_RUNTIME_ARCHIVE_CHECK_H_
