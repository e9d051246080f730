"""Prints what TensorBoard's own reader (EventAccumulator) sees in a directory of event files.

  read_tensorboard.py DIR  ->  one JSON object on stdout:
    {"scalars": {tag: [[step, value], ...]}, "images": {tag: [[step, width, height], ...]},
     "histograms": {tag: [[step, count], ...]}, "texts": {tag: [[step, text], ...]}}

Used by kd's end-to-end tests to check kd's files against the reader TensorBoard itself uses,
including its purge of steps that a resumed run writes again.
"""
import json
import sys

from tensorboard.backend.event_processing import event_accumulator


def main(directory):
    acc = event_accumulator.EventAccumulator(
        directory,
        size_guidance={event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 0,
                       event_accumulator.HISTOGRAMS: 0, event_accumulator.TENSORS: 0},
        purge_orphaned_data=True)
    acc.Reload()
    tags = acc.Tags()
    out = {
        "scalars": {t: [[e.step, e.value] for e in acc.Scalars(t)] for t in tags["scalars"]},
        "images": {t: [[e.step, e.width, e.height] for e in acc.Images(t)] for t in tags["images"]},
        "histograms": {t: [[e.step, e.histogram_value.num] for e in acc.Histograms(t)]
                       for t in tags["histograms"]},
        "texts": {},
    }
    for t in tags["tensors"]:
        rows = []
        for e in acc.Tensors(t):
            strings = [s.decode("utf-8") for s in e.tensor_proto.string_val]
            rows.append([e.step, "\n".join(strings)])
        out["texts"][t] = rows
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
