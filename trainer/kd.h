// kd: a Kauldron-style training framework on LibTorch. One include for a program that uses kd
// as a library (registers its own models, losses, metrics, callbacks and trains):
//
//   #include "trainer/kd.h"
//   kd::models::registry().add<MyModel>("MyModel");
//   kd::train::Trainer(kd::config::load_experiment("exp.yaml", {})).train();
//   // or every kd command: return kd::cli::run(argc, argv);
//
// Each concept's public header, from the bottom floor up (docs/architecture.md).
#pragma once

// clang-format off
#include "trainer/common/common.h"
#include "trainer/compat/torch_compat.h"
#include "trainer/io/io.h"
#include "trainer/runtime/blas.h"
#include "trainer/runtime/cores.h"
#include "trainer/config/config.h"
#include "trainer/tree/tree.h"
#include "trainer/tree/tree_json.h"  // apart from tree.h: it brings in nlohmann/json
#include "trainer/optim/optim.h"
#include "trainer/models/models.h"
#include "trainer/data/data.h"
#include "trainer/checkpoints/checkpoints.h"
#include "trainer/writers/writers.h"
#include "trainer/distributed/distributed.h"
#include "trainer/context/context.h"
#include "trainer/losses/losses.h"
#include "trainer/metrics/metrics.h"
#include "trainer/summaries/summaries.h"
#include "trainer/step/step.h"
#include "trainer/evals/evals.h"
#ifdef KD_WITH_REPORT  // built with the report (the KD_WITH_REPORT option, on in kd's own build)
#include "trainer/report/report.h"
#endif
#include "trainer/run/run.h"
#include "trainer/cli/cli.h"
// clang-format on
