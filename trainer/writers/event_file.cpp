#include "trainer/writers/event_file.h"

#include <unistd.h>

#include <array>
#include <chrono>
#include <filesystem>

#include "trainer/common/error.h"
#include "trainer/writers/tensorboard.pb.h"

namespace kd::writers {
namespace {

std::array<uint32_t, 256> make_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;  // reflected Castagnoli
    table[i] = c;
  }
  return table;
}

void put_le(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t get_le(const std::string& s, std::size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(s[at + static_cast<std::size_t>(i)]);
  return v;
}

}  // namespace

uint32_t crc32c(std::string_view data) {
  static const std::array<uint32_t, 256> table = make_table();
  uint32_t crc = 0xffffffffu;
  for (unsigned char b : data) crc = table[(crc ^ b) & 0xff] ^ (crc >> 8);
  return crc ^ 0xffffffffu;
}

uint32_t masked_crc32c(std::string_view data) {
  const uint32_t crc = crc32c(data);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

EventFileWriter::EventFileWriter(const std::string& directory) {
  std::filesystem::create_directories(directory);
  char host[256] = "localhost";
  gethostname(host, sizeof(host) - 1);
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  path_ = directory + "/events.out.tfevents." +
          std::to_string(std::chrono::duration_cast<std::chrono::seconds>(now).count()) + "." + host;
  out_.open(path_, std::ios::binary | std::ios::app);
  if (!out_) throw IOError("cannot create the TensorBoard event file \"" + path_ + "\"");
  tensorboard::Event version;
  version.set_wall_time(std::chrono::duration<double>(now).count());
  version.set_file_version("brain.Event:2");
  write_record(version.SerializeAsString());
  flush();
}

void EventFileWriter::write_record(std::string_view event) {
  std::string header;
  put_le(header, event.size(), 8);
  std::string record = header;
  put_le(record, masked_crc32c(header), 4);
  record.append(event);
  put_le(record, masked_crc32c(event), 4);
  out_.write(record.data(), static_cast<std::streamsize>(record.size()));
  if (!out_) throw IOError("writing \"" + path_ + "\" failed (disk full?)");
}

void EventFileWriter::flush() { out_.flush(); }

std::vector<std::string> read_records(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IOError("cannot read \"" + path + "\"");
  const std::string bytes((std::istreambuf_iterator<char>(in)), {});
  std::vector<std::string> out;
  std::size_t at = 0;
  while (at + 12 <= bytes.size()) {
    const std::string header = bytes.substr(at, 8);
    if (get_le(bytes, at + 8, 4) != masked_crc32c(header)) {
      throw CorruptionError(path + ": record " + std::to_string(out.size()) + " has a bad length CRC");
    }
    const uint64_t n = get_le(bytes, at, 8);
    if (at + 12 + n + 4 > bytes.size()) break;  // torn last record
    const std::string data = bytes.substr(at + 12, n);
    if (get_le(bytes, at + 12 + n, 4) != masked_crc32c(data)) {
      throw CorruptionError(path + ": record " + std::to_string(out.size()) + " has a bad data CRC");
    }
    out.push_back(data);
    at += 12 + n + 4;
  }
  return out;
}

}  // namespace kd::writers
