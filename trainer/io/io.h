// kd::io: the file system kd's durable outputs go through, atomic writes, files read at any offset, PNG images (the
// public header).
#pragma once

#include "trainer/io/file_system.h"
#include "trainer/io/png.h"
#include "trainer/io/random_access_file.h"
