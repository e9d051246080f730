// kd::io: the file system kd's durable outputs go through, and atomic writes, PNG images (the public header).
#pragma once

#include "trainer/io/file_system.h"
#include "trainer/io/png.h"
