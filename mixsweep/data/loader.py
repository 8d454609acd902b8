"""Batches from a pack (packed.py), augmented on the device: resident in device memory when the loader's
rows fit, else gathered from the memmap by a background thread."""

from __future__ import annotations

import hashlib
import queue
import threading
from typing import Iterator, Sequence

import numpy as np
import torch

from mixsweep.data.augment import AugmentConfig, augment_batch, eval_batch
from mixsweep.data.packed import PackedSet


class _End:
    pass


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


def _mem_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def one_ahead(items: Iterator[dict], device: torch.device) -> Iterator[dict]:
    """The same batches, each made one step early: on CUDA its selection and augmentation kernels run on a side
    stream while the previous batch trains on the current one (which waits for them before it reads the batch).
    The generator draws in the same order, so the batches are the ones made in line."""
    if device.type != "cuda":
        upcoming = next(items, None)
        while upcoming is not None:
            current, upcoming = upcoming, next(items, None)
            yield current
        return
    main, side = torch.cuda.current_stream(device), torch.cuda.Stream(device)

    def make() -> dict | None:
        side.wait_stream(main)  # what the batch reads (a resident pack, the indices) was queued on main
        with torch.cuda.stream(side):
            return next(items, None)

    upcoming = make()
    while upcoming is not None:
        main.wait_stream(side)
        for value in upcoming.values():
            if torch.is_tensor(value) and value.is_cuda:
                value.record_stream(main)  # its memory is not reused before main is done with it
        current, upcoming = upcoming, make()
        yield current


class PackedLoader:
    """Batches of a pack's usable rows, augmented on `device`; one instance per rank.

    Yields dicts: images float (B,3,out,out) on `device`, masks int64 (B,out,out) or None, index int64
    (B,) row indices on the CPU.

    Order: each epoch a permutation from PCG64 seeded by (seed, epoch) (call `set_epoch`), the same on
    every rank; rank r takes positions r, r+W, r+2W, ... so shards are disjoint. Every rank yields the
    same number of batches so DDP never waits on a missing step:
      - train, drop_last: every rank keeps floor(n/W) // B full batches; the rest is dropped this epoch;
      - train, not drop_last: the order is padded cyclically to a multiple of W, last batch partial;
      - train with `num_batches`: exactly that many full batches per rank and epoch, from permutations
        drawn one after another (the first is the plain epoch's) and concatenated, so a set smaller than
        num_batches·B·W is cycled through (and a batch may repeat a row when the set is smaller than B·W);
      - eval (train=False): no shuffle, every usable row exactly once over all ranks. Rank shares differ
        by at most one row; all ranks yield ceil(ceil(n/W)/B) batches, the last one holding the remainder,
        which can be empty (B=0) on a rank whose share ends on a batch boundary. With `pad_to_batch`
        every batch has B rows anyway: zero images and masks of `pad_mask_value` after the real rows
        (`index` lists the real rows only), so a compiled model sees one static shape.

    Data path: `resident` (True, False or 'auto') keeps the whole uint8 pack on the device (auto: when it
    fits in `resident_fraction` of free device memory, or of available RAM on a CPU) and gathers batches
    there; otherwise a background thread gathers each batch from the memmap (rows sorted for locality)
    into pinned memory and copies it on a side stream, `prefetch` batches ahead.
    """

    def __init__(
        self,
        pack: PackedSet,
        batch_size: int,
        *,
        train: bool = True,
        augment: AugmentConfig | None = None,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
        device: torch.device | str = "cpu",
        resident: bool | str = "auto",
        prefetch: int = 2,
        indices: np.ndarray | Sequence[int] | None = None,
        dtype: torch.dtype = torch.float32,
        resident_fraction: float = 0.5,
        num_batches: int | None = None,
        pad_to_batch: bool = False,
        pad_mask_value: int = 255,
        ahead: bool = False,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_batches is not None and (not train or num_batches < 1):
            raise ValueError(f"num_batches ({num_batches}) needs train=True and must be >= 1")
        if pad_to_batch and train:
            raise ValueError("pad_to_batch is for eval loaders (train=False)")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        if resident not in (True, False, "auto"):
            raise ValueError(f"resident must be True, False or 'auto', got {resident!r}")
        self.pack = pack
        self.batch_size = batch_size
        self.train = train
        self.augment = augment or AugmentConfig()
        self.shuffle = shuffle and train
        self.drop_last = drop_last and train
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.device = torch.device(device)
        self.prefetch = max(1, prefetch)
        self.dtype = dtype
        rows = pack.valid_indices
        if indices is not None:
            rows = np.intersect1d(rows, np.asarray(indices, dtype=np.int64))
        self.rows = rows
        if num_batches is not None and len(rows) == 0:
            raise ValueError("num_batches: no usable rows to cycle through")
        self.num_batches = num_batches
        self.pad_to_batch = pad_to_batch
        self.pad_mask_value = pad_mask_value
        self.ahead = ahead  # make batch i+1 while batch i trains (on a side CUDA stream): `one_ahead`
        self.epoch = 0
        self.resident = self._decide_resident(resident, resident_fraction)

    def _decide_resident(self, resident: bool | str, fraction: float) -> bool:
        if resident != "auto":
            return bool(resident)
        s = self.pack.size
        nbytes = len(self.rows) * (s * s * 3 + (0 if self.pack.masks is None else s * s))
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return nbytes <= fraction * free
        if self.device.type == "cpu":
            return nbytes <= fraction * _mem_available()
        return False

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _order(self, epoch: int, passes: int = 1) -> np.ndarray:
        """`passes` orders of all rows, one after another; the first is the same for any `passes`."""
        if not self.shuffle:
            return np.tile(self.rows, passes)
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, epoch])))
        return np.concatenate([self.rows[rng.permutation(len(self.rows))] for _ in range(passes)])

    def _geometry(self) -> tuple[int, int]:
        """(samples this rank takes from the strided shard, number of batches); equal counts on all ranks."""
        n, w, b = len(self.rows), self.world_size, self.batch_size
        if self.num_batches is not None:
            return self.num_batches * b, self.num_batches
        if self.drop_last:
            nb = (n // w) // b
            return nb * b, nb
        per = -(-n // w)
        return per, -(-per // b)

    def epoch_batches(self, epoch: int | None = None) -> list[np.ndarray]:
        """This rank's batches of row indices for an epoch (the current one by default), before augmentation."""
        take, nb = self._geometry()
        passes = 1 if self.num_batches is None else -(-take * self.world_size // len(self.rows))
        order = self._order(self.epoch if epoch is None else epoch, passes)
        if len(order) == 0:
            return [np.zeros(0, dtype=np.int64) for _ in range(nb)]
        if self.train and not self.drop_last:
            order = np.resize(order, take * self.world_size)  # cyclic padding
        mine = order[self.rank::self.world_size][:take]
        b = self.batch_size
        return [mine[i * b:(i + 1) * b] for i in range(nb)]

    def __len__(self) -> int:
        return self._geometry()[1]

    def _resident_arrays(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This loader's rows only, in self.rows order: a union pack holds a whole grid's images and a job
        reads its mixture's share. Cached on the pack, so loaders with the same rows share one copy."""
        name = (str(self.device), hashlib.sha256(self.rows.tobytes()).hexdigest())
        if name not in self.pack._resident:
            arrs = []
            for src in (self.pack.images, self.pack.masks):
                if src is None:
                    arrs.append(None)
                    continue
                dst = torch.empty((len(self.rows), *src.shape[1:]), dtype=torch.uint8, device=self.device)
                row = max(1, int(np.prod(src.shape[1:])))
                step = max(1, (256 << 20) // row)  # 256 MiB at a time: no second full copy in host RAM
                for s in range(0, len(self.rows), step):
                    dst[s:s + step].copy_(torch.from_numpy(np.take(src, self.rows[s:s + step], axis=0)))
                arrs.append(dst)
            self.pack._resident[name] = (arrs[0], arrs[1])
        return self.pack._resident[name]

    def _generator(self) -> torch.Generator:
        state = np.random.SeedSequence([self.seed, self.epoch, self.rank, 1]).generate_state(1)[0]
        return torch.Generator(device=self.device).manual_seed(int(state))

    def _finish(self, images: torch.Tensor, masks: torch.Tensor | None, idx: np.ndarray,
                gen: torch.Generator) -> dict:
        cfg = self.augment
        if self.train:
            x, m = augment_batch(images, masks, cfg, generator=gen, dtype=self.dtype, channels_last=True)
        else:
            x, m = eval_batch(images, masks, cfg.out_size, cfg.mean, cfg.std, dtype=self.dtype, channels_last=True)
            if self.pad_to_batch and x.shape[0] < self.batch_size:
                x, m = self._pad(x, m)
        return {"images": x, "masks": m, "index": torch.from_numpy(np.ascontiguousarray(idx, dtype=np.int64))}

    def _pad(self, x: torch.Tensor, m: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        n, b = x.shape[0], self.batch_size
        # Same dtype, device and (channels-last) strides as a full batch: a compiled model's guards hold.
        px = torch.zeros((b, *x.shape[1:]), dtype=x.dtype, device=x.device).contiguous(
            memory_format=torch.channels_last)
        px[:n] = x
        if m is None:
            return px, None
        pm = torch.full((b, *m.shape[1:]), self.pad_mask_value, dtype=m.dtype, device=m.device)
        pm[:n] = m
        return px, pm

    def __iter__(self) -> Iterator[dict]:
        batches = self.epoch_batches()
        gen = self._generator()
        items = self._iter_resident(batches, gen) if self.resident else self._iter_stream(batches, gen)
        yield from one_ahead(items, self.device) if self.ahead else items

    def _iter_resident(self, batches: list[np.ndarray], gen: torch.Generator) -> Iterator[dict]:
        images, masks = self._resident_arrays()
        if not batches:
            return
        # One upload of the epoch's indices; per batch only device-side slicing, no host round trips.
        # self.rows is sorted (intersect1d), so a pack row's place in the resident copy is a binary search.
        at = np.searchsorted(self.rows, np.concatenate(batches).astype(np.int64))
        flat = torch.from_numpy(at).to(self.device, non_blocking=True)
        start = 0
        for idx in batches:
            sel = flat[start:start + len(idx)]
            start += len(idx)
            yield self._finish(images.index_select(0, sel),
                               None if masks is None else masks.index_select(0, sel), idx, gen)

    def _iter_stream(self, batches: list[np.ndarray], gen: torch.Generator) -> Iterator[dict]:
        pack, device = self.pack, self.device
        cuda = device.type == "cuda"
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def put(item: object) -> None:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return
                except queue.Full:
                    pass

        def produce() -> None:
            try:
                if cuda:
                    stream = torch.cuda.Stream(device)
                    s, b = pack.size, self.batch_size
                    # Two pinned buffers: one being filled while the other's copy is in flight.
                    bufs = [(torch.empty((b, s, s, 3), dtype=torch.uint8, pin_memory=True),
                             torch.empty((b, s, s), dtype=torch.uint8, pin_memory=True)
                             if pack.masks is not None else None) for _ in range(2)]
                    done: list[torch.cuda.Event | None] = [None, None]
                for k, idx in enumerate(batches):
                    if stop.is_set():
                        return
                    idx = np.sort(idx)  # ascending rows read the memmap near-sequentially
                    if not cuda:
                        imgs = torch.from_numpy(np.take(pack.images, idx, axis=0))
                        msks = None if pack.masks is None else torch.from_numpy(np.take(pack.masks, idx, axis=0))
                        put((idx, imgs, msks, None))
                        continue
                    slot = k % 2
                    if done[slot] is not None:
                        done[slot].synchronize()  # this thread waits, never the training loop
                    bi, bm = bufs[slot]
                    # mode='clip': the rows are known valid, and 'raise' would buffer `out` (an extra copy).
                    np.take(pack.images, idx, axis=0, out=bi.numpy()[:len(idx)], mode="clip")
                    if bm is not None:
                        np.take(pack.masks, idx, axis=0, out=bm.numpy()[:len(idx)], mode="clip")
                    with torch.cuda.stream(stream):
                        imgs = bi[:len(idx)].to(device, non_blocking=True)
                        msks = None if bm is None else bm[:len(idx)].to(device, non_blocking=True)
                        ev = torch.cuda.Event()
                        ev.record(stream)
                    done[slot] = ev
                    put((idx, imgs, msks, ev))
                put(_End())
            except BaseException as e:  # surfaced in the consuming thread
                put(_Failed(e))

        thread = threading.Thread(target=produce, name="packed-loader", daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if isinstance(item, _End):
                    return
                if isinstance(item, _Failed):
                    raise item.exc
                idx, imgs, msks, ev = item
                if ev is not None:
                    cur = torch.cuda.current_stream(device)
                    cur.wait_event(ev)  # a device-side wait, not a host sync
                    # The side stream allocated these; keep the allocator from reusing them too early.
                    imgs.record_stream(cur)
                    if msks is not None:
                        msks.record_stream(cur)
                yield self._finish(imgs, msks, idx, gen)
        finally:
            stop.set()
            thread.join()
