"""Synthetic look-alike COCO 2017 and Oxford-IIIT Pet data, written in the real on-disk formats.

The real archives cannot be downloaded here, so tests and `make demo` run the real loaders on this. The
content is procedural but carries a real signal: animal images hold textured creatures of the ten COCO
animal kinds in natural-looking scenes, non-animal images hold man-made objects, and the pets are drawn by
the same creature drawer, so pre-training on more animals has something to find. Everything is a pure
function of (scale, seed, awkward, world): the same call writes byte-identical files.

Layout, bottom up: labels and output (tables, scales, folder layout), jobs (seeded streams, process pool),
draw (shapes, pen, colours), looks, bodies and creatures (animals), objects (man-made things),
backgrounds, scenes (COCO scenes), worlds (planted / null), coco and pets (the two formats on disk),
generate (write_synth).
"""

from mixsweep.synth.generate import synth_is_written, write_synth
from mixsweep.synth.output import COCO_KINDS, GENERATOR_VERSION, SCALES, ScaleSpec, SynthPaths
from mixsweep.synth.worlds import WORLDS

__all__ = ["COCO_KINDS", "GENERATOR_VERSION", "SCALES", "WORLDS", "ScaleSpec", "SynthPaths", "synth_is_written", "write_synth"]
