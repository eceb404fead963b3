#include "core/runtime/archive_check.h"

#include <ATen/ATen.h>
#include <c10/core/CPUAllocator.h>
#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/api/compilation_unit.h>
#include <torch/csrc/jit/serialization/unpickler.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "core/runtime/torch_runtime.h"

namespace memaudit {
namespace {

constexpr uint32_t kEndOfDirectory = 0x06054b50;
constexpr uint32_t kZip64Locator = 0x07064b50;
constexpr uint32_t kZip64EndOfDirectory = 0x06064b50;
constexpr uint32_t kDirectoryEntry = 0x02014b50;
constexpr size_t kEndOfDirectorySize = 22;
constexpr size_t kDirectoryEntrySize = 46;
// A directory larger than this is not a model's: refused before it is read.
constexpr uint64_t kMaxDirectoryBytes = uint64_t{1} << 28;

uint64_t Little(const unsigned char* bytes, int count) {
  uint64_t value = 0;
  for (int i = count - 1; i >= 0; --i) value = value << 8 | bytes[i];
  return value;
}

absl::Status NotAZip(const std::string& path, const std::string& why) {
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": not a zip archive (TorchScript or torch.save): ", why));
}

bool ReadAt(std::ifstream& in, uint64_t offset, size_t count, std::vector<unsigned char>* out) {
  out->resize(count);
  in.clear();
  in.seekg(static_cast<std::streamoff>(offset));
  in.read(reinterpret_cast<char*>(out->data()), static_cast<std::streamsize>(count));
  return static_cast<size_t>(in.gcount()) == count;
}

// Type strings the default parser cannot read (classes of the archive's
// own code) stand for any type: only the storages matter here.
c10::TypePtr ParseTypeOrAny(const std::string& text) {
  try {
    return torch::jit::Unpickler::defaultTypeParser(text);
  } catch (const std::exception&) {
    return c10::AnyType::get();
  }
}

// What an opcode of the pickle protocol (pickletools' table, protocols 0-4)
// takes from the bytes after it and does to the unpickler's stack.
struct Opcode {
  // Its argument: none, `size` fixed bytes, one or two newline-terminated
  // lines, or a little-endian length of `size` bytes (`signed_length`: a
  // signed int) followed by that many bytes.
  enum Argument { kNone, kFixed, kLine, kTwoLines, kLength } argument = kNone;
  int size = 0;
  bool signed_length = false;
  // Its stack effect: kPlain takes `take` items above the innermost mark
  // and pushes `push`; kMark pushes a mark; kToMark drops everything above
  // the innermost mark and the mark, then pushes `push` (`take`: items it
  // needs above the mark); kIntoBelowMark does so too, pushing nothing,
  // into the item just below the mark (APPENDS, SETITEMS, ADDITEMS).
  enum Stack { kPlain, kMark, kToMark, kIntoBelowMark } stack = kPlain;
  int take = 0;
  int push = 0;
};

std::optional<Opcode> OpcodeOf(unsigned char code) {
  using O = Opcode;
  auto plain = [](int take, int push) { return O{O::kNone, 0, false, O::kPlain, take, push}; };
  auto value = [](O::Argument argument, int size, bool signed_length = false) {
    return O{argument, size, signed_length, O::kPlain, 0, 1};
  };
  switch (code) {
    case '(':
      return O{O::kNone, 0, false, O::kMark};
    case '.':
      return plain(1, 0);  // STOP
    case '0':
      return plain(1, 0);  // POP
    case '1':
      return O{O::kNone, 0, false, O::kToMark, 0, 0};  // POP_MARK
    case '2':
      return plain(1, 2);  // DUP
    case 'N':
    case 0x88:
    case 0x89:
    case '}':
    case ']':
    case ')':
    case 0x8f:
      return plain(0, 1);  // constants, empties
    case 'Q':
      return plain(1, 1);  // BINPERSID
    case 'R':
    case 'b':
      return plain(2, 1);  // REDUCE, BUILD
    case 'a':
      return plain(2, 1);  // APPEND
    case 's':
      return plain(3, 1);  // SETITEM
    case 'd':
    case 'l':
    case 't':
    case 0x91:  // DICT LIST TUPLE FROZENSET
      return O{O::kNone, 0, false, O::kToMark, 0, 1};
    case 'o':
      return O{O::kNone, 0, false, O::kToMark, 1, 1};  // OBJ
    case 'e':
    case 'u':
    case 0x90:  // APPENDS SETITEMS ADDITEMS
      return O{O::kNone, 0, false, O::kIntoBelowMark};
    case 0x85:
      return plain(1, 1);  // TUPLE1
    case 0x86:
      return plain(2, 1);  // TUPLE2
    case 0x87:
      return plain(3, 1);  // TUPLE3
    case 0x81:
      return plain(2, 1);  // NEWOBJ
    case 0x92:
      return plain(3, 1);  // NEWOBJ_EX
    case 0x93:
      return plain(2, 1);  // STACK_GLOBAL
    case 0x94:
      return plain(1, 1);  // MEMOIZE
    case 'F':
    case 'I':
    case 'L':
    case 'P':
    case 'S':
    case 'V':
    case 'g':
      return value(O::kLine, 0);
    case 'p':
      return O{O::kLine, 0, false, O::kPlain, 1, 1};  // PUT
    case 'c':
      return value(O::kTwoLines, 0);  // GLOBAL
    case 'i':
      return O{O::kTwoLines, 0, false, O::kToMark, 0, 1};  // INST
    case 'K':
    case 'h':
    case 0x82:
      return value(O::kFixed, 1);
    case 'M':
    case 0x83:
      return value(O::kFixed, 2);
    case 'J':
    case 'j':
    case 0x84:
      return value(O::kFixed, 4);
    case 'G':
      return value(O::kFixed, 8);
    case 'q':
      return O{O::kFixed, 1, false, O::kPlain, 1, 1};  // BINPUT
    case 'r':
      return O{O::kFixed, 4, false, O::kPlain, 1, 1};  // LONG_BINPUT
    case 0x80:
      return O{O::kFixed, 1, false, O::kPlain, 0, 0};  // PROTO
    case 0x95:
      return O{O::kFixed, 8, false, O::kPlain, 0, 0};  // FRAME
    case 'U':
    case 0x8a:
    case 'C':
    case 0x8c:
      return value(O::kLength, 1);
    case 'X':
    case 'B':
      return value(O::kLength, 4);
    case 'T':
    case 0x8b:
      return value(O::kLength, 4, /*signed_length=*/true);
    case 0x8d:
    case 0x8e:
      return value(O::kLength, 8);
    default:
      return std::nullopt;
  }
}

// Walks a pickle's opcodes up to STOP without running them. LibTorch's
// unpickler trusts what a pickle says: it allocates a string of the stated
// length before reading it (500 bytes stating 4 GiB took 1.3 GB of the
// server's memory in 5 s of zero-filling before failing), and it pops items
// without checking that the stack has them (PROTO, NEWOBJ, STOP crashed the
// server). Every length must fit the bytes left, and every opcode must find
// the items and the mark it takes, as Python's own unpickler requires.
absl::Status CheckPickleBounds(const unsigned char* data, size_t size, const std::string& what) {
  auto bad = [&](size_t at, const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", why, " at byte ", at, " (a truncated or crafted file)"));
  };
  int64_t depth = 0;           // items on the stack
  std::vector<int64_t> marks;  // the depth at each mark, innermost last
  for (size_t at = 0; at < size;) {
    const unsigned char code = data[at];
    const std::optional<Opcode> opcode = OpcodeOf(code);
    if (!opcode) {
      return bad(at, absl::StrCat("unknown pickle opcode 0x", absl::Hex(code, absl::kZeroPad2)));
    }
    size_t next = at + 1;
    switch (opcode->argument) {
      case Opcode::kNone:
        break;
      case Opcode::kFixed:
        if (size - next < static_cast<size_t>(opcode->size)) return bad(at, "an opcode cut short");
        next += opcode->size;
        break;
      case Opcode::kLine:
      case Opcode::kTwoLines:
        for (int line = opcode->argument == Opcode::kLine ? 1 : 2; line > 0; --line) {
          const void* end = std::memchr(data + next, '\n', size - next);
          if (end == nullptr) return bad(at, "a line without its end");
          next = static_cast<const unsigned char*>(end) - data + 1;
        }
        break;
      case Opcode::kLength: {
        if (size - next < static_cast<size_t>(opcode->size)) return bad(at, "an opcode cut short");
        const uint64_t length = Little(data + next, opcode->size);
        if (opcode->signed_length && (length & 0x80000000u)) return bad(at, "a negative length");
        next += opcode->size;
        if (length > size - next) {
          return bad(at,
                     absl::StrCat("a length of ", length, " bytes with ", size - next, " left"));
        }
        next += length;
        break;
      }
    }
    const int64_t floor = marks.empty() ? 0 : marks.back();
    switch (opcode->stack) {
      case Opcode::kPlain:
        if (depth - floor < opcode->take) return bad(at, "an opcode that finds too few items");
        depth += opcode->push - opcode->take;
        break;
      case Opcode::kMark:
        marks.push_back(depth);
        break;
      case Opcode::kToMark:
      case Opcode::kIntoBelowMark: {
        if (marks.empty()) return bad(at, "an opcode without its mark");
        const int64_t mark = marks.back();
        marks.pop_back();
        const int64_t below = marks.empty() ? 0 : marks.back();
        if (depth - mark < opcode->take) return bad(at, "an opcode that finds too few items");
        if (opcode->stack == Opcode::kIntoBelowMark && mark - below < 1) {
          return bad(at, "an opcode with nothing below its mark");
        }
        depth = mark + opcode->push;
        break;
      }
    }
    if (code == '.') return absl::OkStatus();  // STOP: the rest is not read
    at = next;
  }
  return absl::InvalidArgumentError(absl::StrCat(what, ": no STOP opcode (a truncated file)"));
}

// TorchScript's parser and compiler recurse once per level of an
// expression's or a block's nesting, on the loading thread's stack: 10,000
// nested parentheses, 20,000 unary minuses or `**` chains crashed the
// server with the default 8 MiB stack. Nesting cannot exceed a statement's
// length, so each logical line (continued inside brackets or after a
// backslash) is bounded, and so are bracket depth and indentation; the
// registry loads on a thread whose stack holds these bounds
// (server/model_registry.cc). Strings and comments are skipped as Python
// lexes them, and do not count toward a statement's length (they nest
// nothing).
constexpr size_t kMaxStatementBytes = 32 * 1024;
constexpr int kMaxSourceNesting = 4096;

absl::Status CheckScriptSource(const char* text, size_t size, const std::string& what) {
  auto bad = [&](size_t line, const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", why, " at line ", line,
                                                   " (TorchScript's parser recurses through it)"));
  };
  size_t line = 1, statement_start = 0, line_start = 0;
  size_t skipped = 0;  // bytes of strings and comments in this statement
  int depth = 0;
  bool indenting = true;
  for (size_t at = 0; at < size; ++at) {
    const char c = text[at];
    if (at - statement_start - skipped > kMaxStatementBytes) {
      return bad(line, absl::StrCat("a statement longer than ", kMaxStatementBytes, " bytes"));
    }
    if (indenting && c != ' ' && c != '\t') {
      indenting = false;
      if (at - line_start > static_cast<size_t>(kMaxSourceNesting)) {
        return bad(line, absl::StrCat("an indentation deeper than ", kMaxSourceNesting));
      }
    }
    switch (c) {
      case '\n':
        ++line;
        line_start = at + 1;
        indenting = true;
        if (depth == 0 && (at == 0 || text[at - 1] != '\\')) {
          statement_start = at + 1;
          skipped = 0;
        }
        break;
      case '#': {
        const size_t begin = at;
        while (at + 1 < size && text[at + 1] != '\n') ++at;
        skipped += at - begin;
        break;
      }
      case '(':
      case '[':
      case '{':
        if (++depth > kMaxSourceNesting) {
          return bad(line, absl::StrCat("brackets nested deeper than ", kMaxSourceNesting));
        }
        break;
      case ')':
      case ']':
      case '}':
        depth = std::max(depth - 1, 0);
        break;
      case '\'':
      case '"': {
        const size_t begin = at;
        const bool triple = at + 2 < size && text[at + 1] == c && text[at + 2] == c;
        at += triple ? 3 : 1;
        for (; at < size; ++at) {
          if (text[at] == '\\') {
            ++at;
          } else if (text[at] == '\n') {
            ++line;
            if (!triple) break;  // unterminated: the parser says so
          } else if (text[at] == c &&
                     (!triple || (at + 2 < size && text[at + 1] == c && text[at + 2] == c))) {
            at += triple ? 2 : 0;
            break;
          }
        }
        at = std::min(at, size - 1);
        skipped += at - begin;
        break;
      }
      default:
        break;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ZipDirectory> ReadZipDirectory(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open file"));
  in.seekg(0, std::ios::end);
  const uint64_t file_size = static_cast<uint64_t>(in.tellg());
  if (file_size < kEndOfDirectorySize) return NotAZip(path, "too short");
  // The end record sits in the last 22 bytes plus a comment of up to 64 KiB.
  const uint64_t tail = std::min<uint64_t>(file_size, kEndOfDirectorySize + 0xFFFF);
  std::vector<unsigned char> bytes;
  if (!ReadAt(in, file_size - tail, tail, &bytes)) return NotAZip(path, "cannot read its end");
  int64_t end = -1;
  for (int64_t i = static_cast<int64_t>(tail - kEndOfDirectorySize); i >= 0; --i) {
    if (Little(&bytes[i], 4) == kEndOfDirectory) {
      end = i;
      break;
    }
  }
  if (end < 0) return NotAZip(path, "no end of central directory");
  uint64_t entries = Little(&bytes[end + 10], 2);
  uint64_t directory_size = Little(&bytes[end + 12], 4);
  uint64_t directory_offset = Little(&bytes[end + 16], 4);
  if (entries == 0xFFFF || directory_size == 0xFFFFFFFF || directory_offset == 0xFFFFFFFF) {
    const uint64_t end_offset = file_size - tail + static_cast<uint64_t>(end);
    std::vector<unsigned char> locator, zip64;
    if (end_offset < 20 || !ReadAt(in, end_offset - 20, 20, &locator) ||
        Little(locator.data(), 4) != kZip64Locator) {
      return NotAZip(path, "no zip64 locator");
    }
    if (!ReadAt(in, Little(&locator[8], 8), 56, &zip64) ||
        Little(zip64.data(), 4) != kZip64EndOfDirectory) {
      return NotAZip(path, "no zip64 end of central directory");
    }
    entries = Little(&zip64[32], 8);
    directory_size = Little(&zip64[40], 8);
    directory_offset = Little(&zip64[48], 8);
  }
  if (directory_size > kMaxDirectoryBytes || directory_offset > file_size ||
      directory_size > file_size - directory_offset ||
      entries > directory_size / kDirectoryEntrySize) {
    return NotAZip(path, "its central directory lies outside the file");
  }
  std::vector<unsigned char> directory;
  if (!ReadAt(in, directory_offset, directory_size, &directory)) {
    return NotAZip(path, "cannot read its central directory");
  }
  ZipDirectory result;
  size_t at = 0;
  for (uint64_t i = 0; i < entries; ++i) {
    if (directory.size() - at < kDirectoryEntrySize ||
        Little(&directory[at], 4) != kDirectoryEntry) {
      return NotAZip(path, absl::StrCat("directory entry ", i + 1, " is damaged"));
    }
    const unsigned char* entry = &directory[at];
    uint64_t size = Little(entry + 24, 4);
    const size_t name_length = Little(entry + 28, 2), extra_length = Little(entry + 30, 2),
                 comment_length = Little(entry + 32, 2);
    if (directory.size() - at - kDirectoryEntrySize < name_length + extra_length + comment_length) {
      return NotAZip(path, absl::StrCat("directory entry ", i + 1, " runs past the directory"));
    }
    std::string name(reinterpret_cast<const char*>(entry + kDirectoryEntrySize), name_length);
    if (size == 0xFFFFFFFF) {  // in the zip64 extra field, whose first value it is
      const unsigned char* extra = entry + kDirectoryEntrySize + name_length;
      bool found = false;
      for (size_t e = 0; e + 4 <= extra_length && !found;) {
        const uint64_t id = Little(extra + e, 2), length = Little(extra + e + 2, 2);
        if (e + 4 + length > extra_length) break;
        if (id == 0x0001 && length >= 8) {
          size = Little(extra + e + 4, 8);
          found = true;
        }
        e += 4 + length;
      }
      if (!found) return NotAZip(path, absl::StrCat(name, ": no zip64 size"));
    }
    if (i == 0) result.first = name;
    if (!result.sizes.emplace(name, size).second) {
      return NotAZip(path, absl::StrCat("record ", name, " is named twice"));
    }
    at += kDirectoryEntrySize + name_length + extra_length + comment_length;
  }
  return result;
}

absl::Status CheckArchive(const std::string& path) {
  ASSIGN_OR_RETURN(const ZipDirectory directory, ReadZipDirectory(path));
  // LibTorch names records inside the folder of the archive's first one.
  const std::string folder = directory.first.substr(0, directory.first.find('/'));
  try {
    caffe2::serialize::PyTorchStreamReader reader(path);
    std::map<std::string, std::pair<at::DataPtr, size_t>> read;  // data.pkl, constants.pkl
    // Every pickle LibTorch may run (the state, the constants, the code's
    // source ranges), before any of them is run, and the code it compiles.
    for (const auto& [name, size] : directory.sizes) {
      if (name.size() <= folder.size() || name.compare(0, folder.size() + 1, folder + "/") != 0) {
        continue;
      }
      const std::string record = name.substr(folder.size() + 1);
      const bool pickle = absl::EndsWith(name, ".pkl") || absl::EndsWith(name, ".debug_pkl");
      const bool source = absl::StartsWith(record, "code/") && absl::EndsWith(name, ".py");
      if (!pickle && !source) continue;
      auto [bytes, length] = reader.getRecord(record);
      if (pickle) {
        RETURN_IF_ERROR(CheckPickleBounds(static_cast<const unsigned char*>(bytes.get()), length,
                                          absl::StrCat(path, ": ", name)));
        if (record == "data.pkl" || record == "constants.pkl") {
          read.emplace(record, std::make_pair(std::move(bytes), length));
        }
      } else {
        RETURN_IF_ERROR(CheckScriptSource(static_cast<const char*>(bytes.get()), length,
                                          absl::StrCat(path, ": ", name)));
      }
    }
    for (const std::string archive : {"data", "constants"}) {
      const std::string pickle_name = archive + ".pkl";
      auto found = read.find(pickle_name);
      if (found == read.end()) continue;  // torch::jit::load says what is missing
      const at::DataPtr& pickle = found->second.first;
      const size_t pickle_size = found->second.second;
      size_t offset = 0;
      auto read = [&](char* buffer, size_t count) {
        count = std::min(count, pickle_size - offset);
        std::memcpy(buffer, static_cast<const char*>(pickle.get()) + offset, count);
        offset += count;
        return count;
      };
      // Each storage gets a one-byte stand-in, never read: its address
      // says which record the storage was meant to be filled from.
      std::unordered_map<const void*, std::string> record_of;
      auto read_record = [&](const std::string& key) {
        at::DataPtr stand_in = c10::GetCPUAllocator()->allocate(1);
        record_of[stand_in.get()] = absl::StrCat(folder, "/", archive, "/", key);
        return stand_in;
      };
      auto unit = std::make_shared<torch::jit::CompilationUnit>();
      auto resolve = [&](const c10::QualifiedName& name) {
        c10::ClassTypePtr type = unit->get_class(name);
        if (type == nullptr) {
          type = c10::ClassType::create(name, unit);
          unit->register_type(type);
        }
        return c10::StrongTypePtr(unit, type);
      };
      std::vector<c10::IValue> pending;  // every object's state, and the root
      auto load_object = [&](const auto& type, c10::IValue state) {
        pending.push_back(std::move(state));
        return c10::ivalue::Object::create(type, 0);
      };
      torch::jit::Unpickler unpickler(read, resolve, load_object, read_record, c10::nullopt,
                                      /*use_storage_device=*/false, &ParseTypeOrAny);
      unpickler.set_version(reader.version());
      pending.push_back(unpickler.parse_ivalue());

      std::unordered_set<const void*> seen;
      while (!pending.empty()) {
        c10::IValue value = std::move(pending.back());
        pending.pop_back();
        if (value.isPtrType() && !seen.insert(value.internalToPointer()).second) continue;
        if (value.isTensor()) {
          const at::Tensor& tensor = value.toTensor();
          if (!tensor.defined()) continue;
          if (tensor.is_sparse()) {
            pending.push_back(tensor._indices());
            pending.push_back(tensor._values());
            continue;
          }
          if (!tensor.has_storage()) continue;
          auto it = record_of.find(tensor.storage().data_ptr().get());
          if (it == record_of.end()) continue;
          auto size = directory.sizes.find(it->second);
          if (size == directory.sizes.end()) {
            return absl::InvalidArgumentError(absl::StrCat(
                path, ": ", pickle_name, " names record ", it->second, ", which the file lacks"));
          }
          if (tensor.storage().nbytes() > size->second) {
            return absl::InvalidArgumentError(
                absl::StrCat(path, ": ", pickle_name, " declares ", tensor.storage().nbytes(),
                             " bytes for record ", it->second, ", which holds ", size->second,
                             " (a truncated or crafted file)"));
          }
        } else if (value.isTuple()) {
          for (const c10::IValue& element : value.toTupleRef().elements()) {
            pending.push_back(element);
          }
        } else if (value.isList()) {
          for (const c10::IValue& element : value.toListRef()) pending.push_back(element);
        } else if (value.isGenericDict()) {
          for (const auto& entry : value.toGenericDict()) {
            pending.push_back(entry.key());
            pending.push_back(entry.value());
          }
        } else if (value.isObject()) {
          for (const c10::IValue& slot : value.toObjectRef().slots()) pending.push_back(slot);
        }
      }
    }
  } catch (const std::exception& e) {
    return TorchError(absl::StatusCode::kInvalidArgument,
                      absl::StrCat(path, ": not a loadable TorchScript or torch.save archive"), e);
  }
  return absl::OkStatus();
}

}  // namespace memaudit
