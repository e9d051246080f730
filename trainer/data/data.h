// kd::data: sources, transforms and the pipeline that batches them (the public header).
#pragma once

#include "trainer/data/idx.h"
#include "trainer/data/pipeline.h"
#include "trainer/data/source.h"
#include "trainer/data/transforms.h"
