"""Retrieval-evaluation speed: video feature extraction, and batched ITM re-ranking against one pair at a time.

1. encode: clips/s of `VideoTextModel.encode_video` on random (B, 3, T, H, W) batches, median over rounds.
2. rerank: V videos x C captions, the top k by ITC of every query re-scored by the fusion encoder in both directions
   (T2V: C·k pairs, V2T: V·k pairs; SPEC §4.1 step 4). Measured in the same run:
   - umt: `rerank_scores` + `match_scorer`, pairs grouped by video and cut into chunks of `--batch-size`, each
     chunk's distinct videos sent once (their cross-attention keys and values computed once per chunk);
   - pair at a time: `match_logits` on one (caption, video) pair per call. Too slow to run on every pair, it is
     timed on a random sample of the same pairs (`--ref-pairs`) and extrapolated linearly to the full count;
   - per query, the upstream layout (`multi_modality/tasks/retrieval_utils.py`): one call per query on its k
     candidates, the query's video tokens (V2T) or caption (T2V) repeated k times; timed on `--ref-queries`
     queries per direction, extrapolated the same way.
   The sampled pairs' scores are compared with umt's (max |difference|): the batching must not change the numbers.

Weights, features and similarities are random: speed does not depend on them. Presets:
  small (default, for a 2-core CPU): vision ViT 256 wide x 4 blocks at 112 px (7 x 7 = 49 tokens a frame, 4 frames
      = 196 tokens); a fusion BERT 64 wide (2 heads, FFN 256), 2 layers of which 1 fuses, captions of 32 tokens.
      The text side is kept this narrow so that the 256,000 fused pairs of the default sizes take ~1-2 minutes.
  umt-b16: UMT-B/16 (768 x 12, 224 px) and BERT-base (768 x 12, fusion from layer 9, V = 30522), 32 tokens.

    python benchmarks/bench_eval.py                                           # CPU, small preset
    python benchmarks/bench_eval.py --videos 100 --captions 100 --k 16        # smoke run, seconds
    python benchmarks/bench_eval.py --device cuda --preset umt-b16 --frames 4 --size 224   # bf16 autocast
    python benchmarks/bench_eval.py --clock process    # CPU seconds of this process: for a CPU shared with others
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from contextlib import nullcontext

import side_by_side
import torch

from umt_cli.evaluation.rerank import VIDEO_SIDE, match_scorer, pair_count, rerank_scores, topk_pairs
from umt_cli.models.config import TextConfig, VideoTextConfig, VisionConfig, build_video_text

PRESETS = {
    "small": {
        "vision": {"dim": 256, "depth": 4, "num_heads": 4, "patch_size": 16},
        "text": {
            "vocab_size": 1000,
            "hidden_size": 64,
            "num_layers": 2,
            "num_heads": 2,
            "intermediate_size": 256,
            "fusion_layer": 1,
        },  # fmt: skip
        "embed_dim": 64,
        "size": 112,
        "frames": 4,
        "batch": {"cpu": 8, "cuda": 64},
    },
    "umt-b16": {
        "vision": {"dim": 768, "depth": 12, "num_heads": 12, "patch_size": 16},
        "text": {
            "vocab_size": 30522,
            "hidden_size": 768,
            "num_layers": 12,
            "num_heads": 12,
            "intermediate_size": 3072,
            "fusion_layer": 9,
        },  # fmt: skip
        "embed_dim": 512,
        "size": 224,
        "frames": 4,
        "batch": {"cpu": 2, "cuda": 64},
    },
}
TEXT_LEN = 32  # MSRVTT's max_txt_l (SPEC §4.2)
DIRECTIONS = ("t2v", "v2t")


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def autocast(device: str):
    """bf16 autocast on CUDA (what evaluation uses there), full precision on the CPU."""
    return torch.autocast("cuda", torch.bfloat16) if device == "cuda" else nullcontext()


CLOCK = {"wall": time.perf_counter, "process": time.process_time}


def timed(args: argparse.Namespace, work) -> tuple[float, object]:
    """(seconds by `--clock`, result) of `work()`, with the device's queue drained on both sides."""
    clock = CLOCK[args.clock]
    sync(args.device)
    start = clock()
    result = work()
    sync(args.device)
    return clock() - start, result


def build_model(args: argparse.Namespace):
    preset = PRESETS[args.preset]
    config = VideoTextConfig(
        vision=VisionConfig(**preset["vision"], img_size=args.size, num_frames=args.frames),
        text=TextConfig(**preset["text"]),
        embed_dim=preset["embed_dim"],
    )
    torch.manual_seed(args.seed)
    return build_video_text(config).eval().to(args.device), config


# --- 1. feature extraction -------------------------------------------------------------------------------------------


def bench_encode(model, args: argparse.Namespace) -> None:
    video = torch.randn(args.batch, 3, args.frames, args.size, args.size, device=args.device)  # (B, C, T, H, W)

    def work():
        with torch.no_grad(), autocast(args.device):
            for _ in range(args.encode_iters):
                model.encode_video(video)

    timed(args, work)  # warm-up: allocator, kernels, caches
    rates = [args.batch * args.encode_iters / timed(args, work)[0] for _ in range(args.rounds)]
    print(
        f"encode_video: batches of {args.batch} x (3, {args.frames}, {args.size}, {args.size}), {args.encode_iters} "
        f"per round: median {statistics.median(rates):.1f} clips/s over {args.rounds} rounds "
        f"(min {min(rates):.1f}, max {max(rates):.1f})"
    )


# --- 2. re-ranking ---------------------------------------------------------------------------------------------------


def random_features(model, config: VideoTextConfig, args: argparse.Namespace):
    """Caption hidden states (C, L, Dtxt) with masks of 8..L tokens, video tokens (V, N, D), ITC (C, V)."""
    g = torch.Generator().manual_seed(args.seed)
    grid = args.size // config.vision.patch_size
    hidden = torch.randn(args.captions, TEXT_LEN, config.text.hidden_size, generator=g)
    lengths = torch.randint(8, TEXT_LEN + 1, (args.captions,), generator=g)
    mask = (torch.arange(TEXT_LEN)[None, :] < lengths[:, None]).long()  # (C, L)
    tokens = torch.randn(args.videos, args.frames * grid * grid, config.vision.dim, generator=g)  # (V, N, D)
    itc = torch.randn(args.captions, args.videos, generator=g)  # (C, V)
    return hidden.to(args.device), mask.to(args.device), tokens.to(args.device), itc.to(args.device)


def itc_of(itc_t2v: torch.Tensor, direction: str) -> torch.Tensor:
    return itc_t2v if direction == "t2v" else itc_t2v.T.contiguous()  # (Q, G)


def bench_batched(model, features, args: argparse.Namespace) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """umt's path: seconds and (Q, k') scores per direction."""
    hidden, mask, tokens, itc_t2v = features
    seconds, scores = {}, {}
    for direction in DIRECTIONS:
        scorer = match_scorer(model, hidden, mask, tokens, direction)

        def work(scorer=scorer, direction=direction):
            with autocast(args.device):
                return rerank_scores(scorer, itc_of(itc_t2v, direction), args.k, batch_size=args.batch_size,
                                     group_by=VIDEO_SIDE[direction])  # fmt: skip

        seconds[direction], scores[direction] = timed(args, work)
    return seconds, scores


def sample_pairs(features, args: argparse.Namespace) -> list[tuple[str, int, int]]:
    """`--ref-pairs` random (direction, query, slot) triples over all re-scored pairs of both directions."""
    itc_t2v = features[3]
    counts = {d: pair_count(itc_of(itc_t2v, d), args.k) for d in DIRECTIONS}
    g = torch.Generator().manual_seed(args.seed + 1)
    flat = torch.randperm(sum(counts.values()), generator=g)[: args.ref_pairs].tolist()
    width = {d: min(args.k, itc_of(itc_t2v, d).shape[1]) for d in DIRECTIONS}
    triples = []
    for i in flat:
        direction = "t2v" if i < counts["t2v"] else "v2t"
        i -= 0 if direction == "t2v" else counts["t2v"]
        triples.append((direction, i // width[direction], i % width[direction]))
    return triples


def bench_pair_at_a_time(model, features, candidates, args) -> tuple[list[float], dict]:
    """Seconds per pair (one value per round) and the scores of the sampled pairs, one `match_logits` call each."""
    hidden, mask, tokens, _ = features
    triples = sample_pairs(features, args)

    def one(direction: str, query: int, slot: int) -> torch.Tensor:
        item = int(candidates[direction][query, slot])
        t, v = (query, item) if direction == "t2v" else (item, query)
        return model.match_logits(hidden[t : t + 1], mask[t : t + 1], tokens[v : v + 1])  # (1,)

    with torch.no_grad(), autocast(args.device):
        for triple in triples[:5]:  # warm-up
            one(*triple)
        per_pair, scores = [], {}
        parts = [part for part in (triples[r :: args.rounds] for r in range(args.rounds)) if part]
        for part in parts:
            seconds, values = timed(args, lambda: [one(*triple) for triple in part])  # noqa: B023
            per_pair.append(seconds / len(part))
            scores.update({triple: float(value) for triple, value in zip(part, values)})
    return per_pair, scores


def upstream_query_call(model, features, direction: str, query: int, items: torch.Tensor) -> torch.Tensor:
    """One query on its k' candidates as upstream lays it out: the query side repeated k' times."""
    hidden, mask, tokens, _ = features
    width = len(items)
    if direction == "v2t":  # the video's tokens repeated: their keys and values are computed k' times
        return model.match_logits(hidden[items], mask[items], tokens[query : query + 1].repeat(width, 1, 1))
    return model.match_logits(hidden[query : query + 1].repeat(width, 1, 1), mask[query : query + 1].repeat(width, 1),
                              tokens[items])  # fmt: skip


def bench_per_query(model, features, candidates, args) -> dict[str, list[float]]:
    """Seconds per query in the upstream layout, per direction, over `--ref-queries` random queries of each."""
    g = torch.Generator().manual_seed(args.seed + 2)
    per_query: dict[str, list[float]] = {}
    with torch.no_grad(), autocast(args.device):
        for direction in DIRECTIONS:
            queries = torch.randperm(len(candidates[direction]), generator=g)[: args.ref_queries + 1].tolist()
            per_query[direction] = []
            for position, query in enumerate(queries):
                items = candidates[direction][query]  # (k',)
                seconds, _ = timed(args, lambda: upstream_query_call(model, features, direction, query, items))  # noqa: B023
                if position:  # the first query of each direction warms up
                    per_query[direction].append(seconds)
    return per_query


def bench_rerank(model, config: VideoTextConfig, args: argparse.Namespace) -> float:
    features = random_features(model, config, args)
    itc_t2v = features[3]
    candidates = {d: topk_pairs(itc_of(itc_t2v, d), args.k) for d in DIRECTIONS}
    pairs = {d: pair_count(itc_of(itc_t2v, d), args.k) for d in DIRECTIONS}
    total_pairs = sum(pairs.values())
    print(
        f"re-ranking {args.videos} videos x {args.captions} captions, k = {args.k}: {total_pairs} fused pairs "
        f"(t2v {pairs['t2v']} + v2t {pairs['v2t']}); vision tokens {features[2].shape[1]} x {config.vision.dim}, "
        f"text {TEXT_LEN} x {config.text.hidden_size}, {config.text.num_layers - config.text.fusion_layer} fusion "
        f"layer(s)"
    )
    bench_batched(model, random_features(model, config, _tiny(args)), _tiny(args))  # warm-up on a tiny problem
    seconds, scores = bench_batched(model, features, args)
    batched = sum(seconds.values())
    print(
        f"  umt batched (rerank_scores, {args.batch_size} pairs a call): {batched:.1f} s (t2v {seconds['t2v']:.1f} s, "
        f"v2t {seconds['v2t']:.1f} s), {total_pairs / batched:.0f} pairs/s"
    )
    per_pair, reference = bench_pair_at_a_time(model, features, candidates, args)
    pair_seconds = statistics.median(per_pair) * total_pairs
    print(
        f"  pair at a time (match_logits per pair): {statistics.median(per_pair) * 1e3:.2f} ms/pair, median over "
        f"{len(per_pair)} rounds of {len(reference)} sampled pairs -> extrapolated linearly to {total_pairs} pairs: "
        f"{pair_seconds:.1f} s"
    )
    per_query = bench_per_query(model, features, candidates, args)
    query_seconds = None
    if all(per_query.values()):
        medians = {d: statistics.median(times) for d, times in per_query.items()}
        query_seconds = medians["t2v"] * args.captions + medians["v2t"] * args.videos
        print(
            f"  per query, upstream layout (k pairs a call, query side repeated): t2v {medians['t2v'] * 1e3:.1f} "
            f"ms/query, v2t {medians['v2t'] * 1e3:.1f} ms/query, medians of {args.ref_queries} sampled queries each "
            f"-> extrapolated to {args.captions} + {args.videos} queries: {query_seconds:.1f} s"
        )
    difference = max((abs(float(scores[d][q, s]) - value) for (d, q, s), value in reference.items()), default=0.0)
    print(f"  max |umt - pair at a time| over the sampled pairs: {difference:.2e}")
    ratio = pair_seconds / batched
    upstream = "" if query_seconds is None else f", vs per query (upstream layout) {query_seconds / batched:.2f}x"
    print(f"speed-up umt batched vs pair at a time: {ratio:.2f}x (goal >= 5x){upstream}")
    return ratio


def _tiny(args: argparse.Namespace) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "videos": 4, "captions": 4, "k": 2})


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS))
    parser.add_argument("--frames", type=int, default=None, help="default: the preset's (4)")
    parser.add_argument("--size", type=int, default=None, help="default: the preset's (small 112, umt-b16 224)")
    parser.add_argument("--batch", type=int, default=None, help="clips per encode_video call; default: by preset")
    parser.add_argument("--encode-iters", type=int, default=2, help="encode_video calls per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--captions", type=int, default=1000)
    parser.add_argument("--k", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=512, help="most fused pairs per umt call")
    parser.add_argument("--ref-pairs", type=int, default=2000, help="pairs timed one at a time")
    parser.add_argument("--ref-queries", type=int, default=8, help="queries per direction timed the upstream way")
    parser.add_argument("--only", choices=["encode", "rerank"], default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads; default: torch's choice")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCK),
        default="wall",
        help="'process' counts this process's CPU seconds (all threads): steadier than wall time on a busy CPU",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if min(args.rounds, args.ref_pairs, args.k, args.batch_size, args.videos, args.captions) < 1:
        parser.error("--rounds, --ref-pairs, --k, --batch-size, --videos and --captions must be >= 1")
    side_by_side.require_device(parser, args)
    preset = PRESETS[args.preset]
    args.frames = args.frames or preset["frames"]
    args.size = args.size or preset["size"]
    args.batch = args.batch or preset["batch"][args.device]
    return args


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, config = build_model(args)
    print(
        f"torch {torch.__version__}, {args.device}{' bf16 autocast' if args.device == 'cuda' else ' fp32'}, "
        f"threads {torch.get_num_threads()}, {args.clock} clock; preset {args.preset}: "
        f"vision {config.vision.dim} x {config.vision.depth} at {args.size} px, {args.frames} frames; "
        f"text {config.text.hidden_size} x {config.text.num_layers} "
        f"(fusion from layer {config.text.fusion_layer})"
    )
    if args.only != "rerank":
        bench_encode(model, args)
    if args.only != "encode" and not math.isfinite(bench_rerank(model, config, args)):
        sys.exit(1)


if __name__ == "__main__":
    main()
