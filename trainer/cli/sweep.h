// `kd sweep`: one experiment run at several points of its keys, each point an ordinary kd run
// with its own workdir under the sweep's directory (Kauldron's sweeps, without a launcher of its
// own: the points run here, N at a time, or as a SLURM array job).
//
//   kd sweep --cfg=configs/fashion_mnist_mlp.yaml --sweep.optimizer.learning_rate=[1e-3,3e-3]
//            --sweep.seed=[0,1] [--cfg.KEY=VALUE ...] [--sweep-file=points.yaml] [--dir=DIR]
//            [--jobs=N] [--slurm]
//
// Points: the product of every --sweep.KEY=[values] (the last one varies fastest), times the
// points a sweep file lists (a YAML list of maps of key: value, as Kauldron's sweep() yields
// dicts of overrides). Each point is named by its values ("learning_rate=0.001,seed=0") and runs
// `kd train --cfg=FILE <--cfg overrides> <its values> --cfg.workdir=DIR/NAME`. DIR (default: the
// experiment's workdir) gets sweep.json, the manifest of the points, and logs/NAME.txt, each
// point's output.
//
// --jobs=N runs N points at a time, the cores shared between them (--cfg.num_threads, unless
// the experiment or the sweep sets it). A point whose latest checkpoint is at num_train_steps is
// skipped; any other runs, resuming from its checkpoints: a rerun of the same command after an
// interruption finishes the sweep. SIGINT/SIGTERM stop the points (each saves a checkpoint),
// and a point is sent SIGTERM if the sweep dies. --slurm writes DIR/sweep.sbatch, an array job
// with one task per point, instead of running anything.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kd::cli {

struct SweepOptions {
  std::string cfg;
  std::vector<std::string> args;  // the --cfg.KEY=VALUE and --sweep.KEY=[...] arguments
  std::string sweep_file;
  std::string dir;
  int64_t jobs = 1;
  bool slurm = false;
  std::string program;  // the kd binary the points run (default: this executable)
};

// Returns 0 when every point finished (or the script was written), 1 when a point failed,
// 128+N after signal N; throws kd::ConfigError for a bad sweep.
int sweep(const SweepOptions& options);

}  // namespace kd::cli
