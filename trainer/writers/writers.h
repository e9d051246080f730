// kd::writers: where logged values go (JSONL, CSV, TensorBoard) (the public header).
#pragma once

#include "trainer/writers/event_file.h"
#include "trainer/writers/writer.h"
