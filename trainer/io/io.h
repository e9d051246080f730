// kd::io: the file system kd's durable outputs go through, atomic writes, memory-mapped files, PNG images (the
// public header).
#pragma once

#include "trainer/io/file_system.h"
#include "trainer/io/mapped_file.h"
#include "trainer/io/png.h"
