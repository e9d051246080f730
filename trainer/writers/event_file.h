// TensorBoard event files: TFRecord framing (length, masked CRC32C of the length, data,
// masked CRC32C of the data) around serialized Event protos; the first record is the
// `file_version: "brain.Event:2"` event. Also the reader used by tests and tools.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

namespace kd::writers {

// CRC-32C (Castagnoli), as TFRecord uses. Written here: Debian bookworm packages no C/C++
// CRC-32C library (zlib's crc32 is a different polynomial).
uint32_t crc32c(std::string_view data);
uint32_t masked_crc32c(std::string_view data);

class EventFileWriter {
 public:
  // Creates `directory` and events.out.tfevents.<seconds>.<host> in it, and writes the
  // file_version record. Throws kd::IOError.
  explicit EventFileWriter(const std::string& directory);
  // Appends one serialized Event as a TFRecord.
  void write_record(std::string_view event);
  void flush();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream out_;
};

// Every record's payload; throws kd::CorruptionError naming the record whose length or data
// fails its CRC (a torn last record from a killed writer is dropped).
std::vector<std::string> read_records(const std::string& path);

}  // namespace kd::writers
