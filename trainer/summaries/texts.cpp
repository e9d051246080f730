// ShowTexts: the first texts of the run (e.g. decoded predictions).
#include <memory>

#include "trainer/common/error.h"
#include "trainer/context/context.h"
#include "trainer/summaries/summary.h"

namespace kd::summaries {
namespace {

class ShowTexts : public Summary {
 public:
  explicit ShowTexts(const config::Node& o) : texts_(key(o, "texts")), num_texts_(o.get_int("num_texts", 5)) {
    if (num_texts_ < 1) throw ConfigError(o.where() + ": num_texts must be >= 1");
  }

  Kind kind() const override { return Kind::kTexts; }

  // A list of up to num_texts string leaves.
  Tree get_state(const train::Context& ctx) const override {
    const Tree value = ctx.get(texts_);
    if (value.kind() == Tree::Kind::kString) return Tree::list({value});
    if (!value.is_list()) {
      throw TypeError("\"" + texts_.str() + "\" must hold a string or a list of strings, but it holds " +
                      value.describe());
    }
    Tree out = Tree::list();
    for (const Tree& item : value.children()) {
      if (item.kind() != Tree::Kind::kString) {
        throw TypeError("\"" + texts_.str() + "\" must hold a list of strings, but one item is " + item.describe());
      }
      if (static_cast<int64_t>(out.size()) == num_texts_) break;
      out.push_back(item);
    }
    return out;
  }

  // The first num_texts of a, then of b.
  Tree merge(const Tree& a, const Tree& b) const override {
    if (a.is_none()) return b;
    if (b.is_none()) return a;
    Tree out = Tree::list();
    for (const Tree* side : {&a, &b}) {
      for (const Tree& item : side->children()) {
        if (static_cast<int64_t>(out.size()) == num_texts_) return out;
        out.push_back(item);
      }
    }
    return out;
  }

  Tree compute(const Tree& state) const override { return state; }

 private:
  Path texts_;
  int64_t num_texts_;
};

}  // namespace

// Called once by registry() (registry.cpp).
void add_text_summaries(config::Registry<Summary>& r) {
  r.add(
      "ShowTexts", [](const config::Node& o) { return std::make_shared<ShowTexts>(o); },
      "the first texts: texts (a string or a list of strings), num_texts=5");
}

}  // namespace kd::summaries
