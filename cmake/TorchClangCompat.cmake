# LibTorch 1.13's ATen/core/List.h (Debian 12) does not compile with clang
# in C++20: ListImpl's constructor and copy(), and ptr_to_first_element,
# use std::vector<IValue> where IValue is still incomplete, and C++20's
# constexpr std::vector makes clang instantiate them there (GCC defers).
# For clang builds this writes a patched copy into the build tree, ahead of
# /usr/include: the two members become templates (instantiated where they
# are used, IValue complete by then) and ptr_to_first_element, which no
# header calls, is left declared only. A List.h without these spots (a
# fixed LibTorch) is used as is.
find_file(MEMAUDIT_TORCH_LIST_H ATen/core/List.h PATHS ${TORCH_INCLUDE_DIRS} NO_CACHE)
if(NOT MEMAUDIT_TORCH_LIST_H)
  return()
endif()
file(READ ${MEMAUDIT_TORCH_LIST_H} list_h)
# Replaces `from` (which must occur) by `to` in `patched`; else unsets it.
function(memaudit_patch_list_h from to)
  if(DEFINED patched)
    string(FIND "${patched}" "${from}" at)
    if(at EQUAL -1)
      unset(patched PARENT_SCOPE)
    else()
      string(REPLACE "${from}" "${to}" result "${patched}")
      set(patched "${result}" PARENT_SCOPE)
    endif()
  endif()
endfunction()
set(patched "${list_h}")
memaudit_patch_list_h(
  "  explicit ListImpl(list_type list_, TypePtr elementType_)\n"
  "  template <class List_ = list_type>\n  explicit ListImpl(List_ list_, TypePtr elementType_)\n")
memaudit_patch_list_h(
  "  intrusive_ptr<ListImpl> copy() const {\n"
  "  template <class Self = ListImpl>\n  intrusive_ptr<Self> copy() const {\n")
memaudit_patch_list_h(
  "inline const IValue* ptr_to_first_element(const GenericList& list) {\n  return &list.impl_->list[0];\n}\n"
  "")
if(NOT DEFINED patched)
  message(STATUS "clang: LibTorch's ATen/core/List.h used as is")
  return()
endif()
set(compat_dir ${CMAKE_BINARY_DIR}/torch-clang-compat)
file(CONFIGURE OUTPUT ${compat_dir}/ATen/core/List.h CONTENT "${patched}" @ONLY)
include_directories(BEFORE SYSTEM ${compat_dir})
message(STATUS "clang: using a patched ATen/core/List.h from ${compat_dir}")
