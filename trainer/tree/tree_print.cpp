// How trees describe themselves: "dict(2)", the indented listing (tensors: common/tensor_text.h).
#include <sstream>

#include "trainer/tree/tree.h"
#include "trainer/tree/tree_internal.h"

namespace kd {
namespace {

using detail::for_each_child;

void print_into(const Tree& node, int indent, std::ostringstream& out) {
  for_each_child(node, [&](const PathSegment& s, const Tree& child) {
    out << std::string(static_cast<std::size_t>(indent) * 2, ' ') << s.str() << ":";
    if (child.is_dict() || child.is_list()) {
      if (child.size() == 0) {
        out << (child.is_dict() ? " {}" : " []") << "\n";
      } else {
        out << "\n";
        print_into(child, indent + 1, out);
      }
    } else {
      out << " " << child.describe() << "\n";
    }
  });
}

}  // namespace

const char* detail::kind_name(Tree::Kind kind) {
  switch (kind) {
    case Tree::Kind::kNone:
      return "none";
    case Tree::Kind::kTensor:
      return "tensor";
    case Tree::Kind::kInt:
      return "int";
    case Tree::Kind::kFloat:
      return "float";
    case Tree::Kind::kString:
      return "string";
    case Tree::Kind::kDict:
      return "dict";
    case Tree::Kind::kList:
      return "list";
  }
  return "?";
}

std::string Tree::describe() const {
  switch (kind()) {
    case Kind::kNone:
      return "none";
    case Kind::kTensor:
      return describe_tensor(node_->tensor);
    case Kind::kInt:
      return "int " + std::to_string(node_->int_value);
    case Kind::kFloat: {
      std::ostringstream s;
      s << "float " << node_->float_value;
      return s.str();
    }
    case Kind::kString:
      return "string \"" + node_->string_value + "\"";
    case Kind::kDict:
    case Kind::kList:
      return std::string(detail::kind_name(kind())) + "(" + std::to_string(size()) + ")";
  }
  return "?";
}

std::string Tree::to_string() const {
  if (!is_dict() && !is_list()) return describe() + "\n";
  std::ostringstream out;
  print_into(*this, 0, out);
  return out.str();
}

}  // namespace kd
