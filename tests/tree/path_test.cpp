#include <catch2/catch.hpp>

#include "trainer/common/error.h"
#include "trainer/tree/path.h"

using kd::Path;
using kd::PathSegment;
using Kind = kd::PathSegment::Kind;

TEST_CASE("a dotted path parses into keys") {
  const Path p = Path::parse("params.encoder.0.weight");
  REQUIRE(p.size() == 4);
  CHECK(p[0] == PathSegment::make_key("params"));
  CHECK(p[2] == PathSegment::make_key("0"));
  CHECK(p[3] == PathSegment::make_key("weight"));
  CHECK_FALSE(p.has_glob());
}

TEST_CASE("brackets hold indices, negative indices and quoted keys") {
  const Path p = Path::parse("preds.tokens[0][-1][\"a.b\"]['c]']");
  REQUIRE(p.size() == 6);
  CHECK(p[2] == PathSegment::make_index(0));
  CHECK(p[3] == PathSegment::make_index(-1));
  CHECK(p[4] == PathSegment::make_key("a.b"));
  CHECK(p[5] == PathSegment::make_key("c]"));
}

TEST_CASE("star and double star are glob segments") {
  const Path p = Path::parse("params.**.bias");
  REQUIRE(p.size() == 3);
  CHECK(p[1].kind == Kind::kDoubleStar);
  CHECK(p.has_glob());
  CHECK(Path::parse("grads.*")[1].kind == Kind::kStar);
  CHECK(Path::parse("x[*]")[1].kind == Kind::kStar);
}

TEST_CASE("keys may hold slashes, dashes and colons") {
  const Path p = Path::parse("metrics/accuracy.top-1:val");
  REQUIRE(p.size() == 2);
  CHECK(p[0].key == "metrics/accuracy");
  CHECK(p[1].key == "top-1:val");
}

TEST_CASE("str() writes the canonical form that parses back to the same path") {
  for (const char* text : {"batch.image", "preds.tokens[0]", "a[\"b.c\"].d", "params.**.bias", "x[-2].*",
                           "interms.block_1.attn", "a[\"\"]", "a[\"q\\\"uote\"]"}) {
    const Path p = Path::parse(text);
    CHECK(p.str() == text);
    CHECK(Path::parse(p.str()) == p);
  }
}

TEST_CASE("invalid path syntax names the problem and the position") {
  auto message_of = [](const char* text) {
    try {
      Path::parse(text);
    } catch (const kd::PathSyntaxError& e) {
      return std::string(e.what());
    }
    FAIL("no error for " << text);
    return std::string();
  };
  CHECK_THAT(message_of(""), Catch::Contains("the path is empty"));
  CHECK_THAT(message_of("preds..logits"), Catch::Contains("empty key") && Catch::Contains("position 6"));
  CHECK_THAT(message_of(".preds"), Catch::Contains("empty key") && Catch::Contains("position 0"));
  CHECK_THAT(message_of("preds."), Catch::Contains("ends with '.'"));
  CHECK_THAT(message_of("x[0"), Catch::Contains("expected ']'"));
  CHECK_THAT(message_of("x[abc]"), Catch::Contains("an index must be an integer"));
  CHECK_THAT(message_of("x[]"), Catch::Contains("an index must be an integer"));
  CHECK_THAT(message_of("x[\"abc]"), Catch::Contains("unclosed quote"));
  CHECK_THAT(message_of("x[0]y"), Catch::Contains("expected '.' or '['"));
  CHECK_THAT(message_of("params.enc*"), Catch::Contains("partial globs"));
  CHECK_THAT(message_of("a.***"), Catch::Contains("partial globs"));
  CHECK_THAT(message_of("a.[0]"), Catch::Contains("expected a key after '.'"));
  // The caret line points at the error.
  CHECK_THAT(message_of("preds..logits"), Catch::EndsWith("preds..logits\n        ^"));
}

TEST_CASE("path helpers build new paths without changing the old one") {
  const Path p = Path::parse("a.b");
  CHECK(p.key("c").str() == "a.b.c");
  CHECK(p.index(3).str() == "a.b[3]");
  CHECK(p.str() == "a.b");
  CHECK(Path::parse("a.b.c").prefix(2) == p);
  CHECK(Path::parse("a.b.c").drop_front().str() == "b.c");
  CHECK(Path::parse("a.b.c").starts_with(p));
  CHECK_FALSE(p.starts_with(Path::parse("a.b.c")));
  CHECK(p.join(Path::parse("x[1]")).str() == "a.b.x[1]");
  CHECK(Path::from_dotted("encoder.0.weight") == Path::parse("encoder.0.weight"));
}
