"""Held-out evaluation: greedy decoding, scored by the same `score` as RL rewards.

Data-parallel in a multi-process job: the selected rows are cut into the batches one process
would decode, each rank decodes every world-th batch, and the records are gathered back in the
selection's order, so two processes give one process's records and metrics. Sampled pass@k draws
from per-row seeds, for the same reason."""

from __future__ import annotations

import hashlib
import statistics
from collections import defaultdict

from model_src.config import EvalConfig
from model_src.data.schema import reward_domain, row_verifier
from model_src.model.inputs import prompt_example
from model_src.rewards.batch import Scorer, ScoreRequest
from model_src.train.distributed import all_gather_objects, all_reduce_sum, process_group


def _request(row: dict, response: str) -> ScoreRequest:
    return ScoreRequest(reward_domain(row), response, row["answer"], row["question"], row_verifier(row))


def evaluate_model(model, processor, rows: list[dict], cfg: EvalConfig,
                   engine=None, scorer: Scorer | None = None) -> tuple[dict[str, float], list[dict]]:
    """Returns (metrics, per-sample records). Metrics: `accuracy/<domain>` (greedy), `format_ok/<domain>`,
    `accuracy_mean` (mean over domains) and `num_samples`; with `cfg.pass_k`, also
    `pass_at_<k>/<domain>` and `sampled_accuracy/<domain>` (mean reward of k samples at temperature 1)
    and their means. Responses come from `engine` (a rollout engine: transformers `generate` on
    `model` when None, or vLLM in-process or as a server, `evaluate.rollout_engine`). They are
    scored by `scorer` as RL scores rollouts (in this process when None); each record keeps the
    reward's parts and reason, and `reward_timeouts` counts calls that ran out of time. With
    `cfg.blind_baseline`, the same prompts are answered again with blank images:
    `blind_accuracy/<domain>` and `visual_gain/<domain>` (accuracy - blind accuracy), and
    `visual_gain_mean`."""
    from model_src.rl.rollout import TransformersEngine

    engine = engine or TransformersEngine(model, processor)
    scorer = scorer or Scorer()
    timeouts_before = scorer.stats["reward_timeouts"]

    by_domain: dict[str, list[dict]] = defaultdict(list)
    # a deterministic but task-mixed pick: ids sort by task ("chart-diff-..." before "chart-peak-...")
    for row in sorted(rows, key=lambda r: hashlib.sha256(r["id"].encode()).hexdigest()):
        if len(by_domain[row["domain"]]) < cfg.max_samples_per_domain:
            by_domain[row["domain"]].append(row)
    selected = [row for domain in sorted(by_domain) for row in by_domain[domain]]
    if not selected:
        raise ValueError("evaluate: the eval split is empty")
    records = _greedy_records(engine, processor, selected, cfg, scorer)
    metrics: dict[str, float] = {}
    for domain in sorted(by_domain):
        mine = [r for r in records if r["domain"] == domain]
        metrics[f"accuracy/{domain}"] = statistics.fmean(r["reward"] for r in mine)
        metrics[f"format_ok/{domain}"] = statistics.fmean(float(r["format_ok"]) for r in mine)
        metrics[f"forced_answer/{domain}"] = statistics.fmean(float(r["forced"]) for r in mine)
        metrics[f"response_tokens/{domain}"] = statistics.fmean(r["response_tokens"] for r in mine)
    if cfg.pass_k:
        sampled = sampled_rewards(engine, processor, selected, cfg, scorer)
        sampled_metrics, passed = aggregate_sampled(
            {domain: [r["id"] for r in rows_of] for domain, rows_of in by_domain.items()}, sampled, cfg.pass_k)
        metrics.update(sampled_metrics)
        for record in records:
            record[f"pass_at_{cfg.pass_k}"] = passed[record["id"]]
    if cfg.blind_baseline:
        # the same prompts with every image blank (white, same size): what the model answers without
        # looking. A model that reads its images beats it; one that answers from priors does not
        blind = _greedy_records(engine, processor, [blank_images(row) for row in selected], cfg, scorer, "blind")
        for record, blind_record in zip(records, blind):
            record["blind_reward"] = blind_record["reward"]
        for domain in sorted(by_domain):
            mine = [r for r in records if r["domain"] == domain]
            metrics[f"blind_accuracy/{domain}"] = statistics.fmean(r["blind_reward"] for r in mine)
            metrics[f"visual_gain/{domain}"] = metrics[f"accuracy/{domain}"] - metrics[f"blind_accuracy/{domain}"]
        metrics["visual_gain_mean"] = statistics.fmean(metrics[f"visual_gain/{d}"] for d in sorted(by_domain))
    metrics["accuracy_mean"] = statistics.fmean(metrics[f"accuracy/{d}"] for d in sorted(by_domain))
    metrics["format_ok_mean"] = statistics.fmean(metrics[f"format_ok/{d}"] for d in sorted(by_domain))
    metrics["num_samples"] = float(len(records))
    metrics["reward_timeouts"] = all_reduce_sum(float(scorer.stats["reward_timeouts"] - timeouts_before))
    return metrics, records


def _greedy_records(engine, processor, selected: list[dict], cfg: EvalConfig, scorer: Scorer,
                    desc: str = "evaluate") -> list[dict]:
    """Greedy answers to `selected`, scored, one record each, in the selection's order. Every
    process decodes its share of the batches; every process gets all the records."""
    from tqdm import tqdm

    rank, world = process_group()
    batches = [selected[start:start + cfg.batch_size] for start in range(0, len(selected), cfg.batch_size)]
    mine: list[tuple[int, list[dict]]] = []
    for index in tqdm(range(rank, len(batches), world), desc=desc, unit="batch", disable=rank != 0):
        chunk = batches[index]
        examples = [prompt_example(processor, row) for row in chunk]
        out = engine.generate(examples, max_new_tokens=cfg.max_new_tokens, do_sample=False,
                              force_answer_tokens=cfg.force_answer_tokens)
        lengths = out.response_mask.sum(dim=1).tolist()
        results = scorer.score_many([_request(row, text) for row, text in zip(chunk, out.texts)])
        mine.append((index, [
            {"id": row["id"], "domain": row["domain"], "question": row["question"], "reference": row["answer"],
             "response": text, "reward": result.reward, "format_ok": result.format_ok, "reason": result.reason,
             "parts": result.parts, "forced": forced, "response_tokens": int(length)}
            for row, text, forced, length, result in zip(chunk, out.texts, out.forced, lengths, results)]))
    # every rank's batches back in the selection's order: the records one process would make
    gathered = sorted((part for parts in all_gather_objects(mine) for part in parts), key=lambda part: part[0])
    return [record for _, part in gathered for record in part]


def blank_images(row: dict) -> dict:
    """`row` with each image replaced by a white PNG of the same size (the blind baseline's input).

    >>> import io; from PIL import Image
    >>> png = io.BytesIO(); Image.new("RGB", (30, 20), (9, 9, 9)).save(png, format="PNG")
    >>> Image.open(io.BytesIO(blank_images({"images": [png.getvalue()]})["images"][0])).getextrema()
    ((255, 255), (255, 255), (255, 255))
    """
    import io

    from PIL import Image

    blank = []
    for data in row["images"]:
        buffer = io.BytesIO()
        Image.new("RGB", Image.open(io.BytesIO(data)).size, (255, 255, 255)).save(buffer, format="PNG")
        blank.append(buffer.getvalue())
    return {**row, "images": blank}


def aggregate_sampled(ids_by_domain: dict[str, list[str]], sampled: dict[str, list[float]],
                      k: int) -> tuple[dict[str, float], dict[str, bool]]:
    """(metrics, passed per id) from k sampled rewards per prompt. pass@k: any of the k samples
    fully right (reward 1); sampled accuracy: the mean reward of the k samples (what RL raises);
    both per domain (the mean over its prompts) and `_mean` over domains.

    >>> m, passed = aggregate_sampled({"a": ["p1", "p2"], "b": ["p3"]},
    ...                               {"p1": [1.0, 0.0], "p2": [0.5, 0.9], "p3": [1.0, 1.0]}, 2)
    >>> passed
    {'p1': True, 'p2': False, 'p3': True}
    >>> {name: round(value, 4) for name, value in m.items()}
    {'pass_at_2/a': 0.5, 'sampled_accuracy/a': 0.6, 'pass_at_2/b': 1.0, 'sampled_accuracy/b': 1.0, 'pass_at_2_mean': 0.75, 'sampled_accuracy_mean': 0.8}
    """
    passed = {i: any(r >= 1.0 for r in rewards) for i, rewards in sampled.items()}
    metrics: dict[str, float] = {}
    for domain in sorted(ids_by_domain):
        ids = ids_by_domain[domain]
        metrics[f"pass_at_{k}/{domain}"] = statistics.fmean(float(passed[i]) for i in ids)
        metrics[f"sampled_accuracy/{domain}"] = statistics.fmean(statistics.fmean(sampled[i]) for i in ids)
    for name in (f"pass_at_{k}", "sampled_accuracy"):
        metrics[f"{name}_mean"] = statistics.fmean(metrics[f"{name}/{d}"] for d in sorted(ids_by_domain))
    return metrics, passed


def sampled_rewards(engine, processor, rows: list[dict], cfg: EvalConfig,
                    scorer: Scorer | None = None) -> dict[str, list[float]]:
    """For every row: the rewards of `cfg.pass_k` samples from `engine` (temperature 1, top-p 1, as
    RL rollouts). Each row samples from its own seed (its id's): the same samples for the same
    model whichever process, batch or engine run draws them, and no global RNG touched."""
    from model_src.model.generate import derived_seed

    rank, world = process_group()
    mine: dict[str, list[float]] = {}
    for start in range(rank * cfg.batch_size, len(rows), world * cfg.batch_size):
        chunk = rows[start:start + cfg.batch_size]
        examples = [prompt_example(processor, row) for row in chunk]
        out = engine.generate(examples, n=cfg.pass_k, max_new_tokens=cfg.max_new_tokens, do_sample=True,
                              force_answer_tokens=cfg.force_answer_tokens,
                              seeds=[derived_seed("pass_at_k", row["id"]) for row in chunk])
        rows_of = [chunk[k // cfg.pass_k] for k in range(len(out.texts))]
        results = (scorer or Scorer()).score_many([_request(row, text) for row, text in zip(rows_of, out.texts)])
        for row, result in zip(rows_of, results):
            mine.setdefault(row["id"], []).append(result.reward)
    gathered = {i: r for part in all_gather_objects(mine) for i, r in part.items()}
    return {row["id"]: gathered[row["id"]] for row in rows}


def domain_table(metrics: dict[str, float]) -> list[dict]:
    """One row per domain from `metric/<domain>` keys.

    >>> domain_table({"accuracy/ocr": 0.5, "format_ok/ocr": 1.0, "accuracy_mean": 0.5})
    [{'domain': 'ocr', 'accuracy': 0.5, 'format_ok': 1.0}]
    """
    rows: dict[str, dict] = {}
    for key, value in sorted(metrics.items()):
        if "/" in key:
            name, domain = key.split("/", 1)
            rows.setdefault(domain, {"domain": domain})[name] = value
    return list(rows.values())


def accuracy_plot(metrics: dict[str, float], path, title: str) -> None:
    """Bars of accuracy and format-valid share per domain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = domain_table(metrics)
    domains = [row["domain"] for row in table]
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(domains)), 3.2))
    xs = range(len(domains))
    ax.bar([x - 0.2 for x in xs], [row.get("accuracy", 0) for row in table], width=0.4, label="accuracy")
    ax.bar([x + 0.2 for x in xs], [row.get("format_ok", 0) for row in table], width=0.4, label="format ok")
    ax.set_xticks(list(xs), domains, rotation=30)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def worst_examples_html(records: list[dict], rows: list[dict], per_domain: int) -> str:
    """A page a reviewer can open: the lowest-reward samples per domain with image, question,
    response and reference."""
    import base64
    import html

    by_id = {row["id"]: row for row in rows}
    parts = ["<html><head><meta charset='utf-8'><title>worst examples</title></head><body>",
             "<h1>Worst examples per domain</h1>"]
    by_domain: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_domain[record["domain"]].append(record)
    for domain in sorted(by_domain):
        parts.append(f"<h2>{html.escape(domain)}</h2><table border='1' cellpadding='4'>"
                     "<tr><th>image</th><th>question</th><th>response</th><th>reference</th><th>reward</th></tr>")
        for record in sorted(by_domain[domain], key=lambda r: (r["reward"], r["id"]))[:per_domain]:
            images = "".join(f"<img src='data:image/png;base64,{base64.b64encode(data).decode()}' height='64'>"
                             for data in by_id[record["id"]]["images"][:6])
            parts.append(f"<tr><td>{images}</td><td>{html.escape(record['question'])}</td>"
                         f"<td><code>{html.escape(record['response'])}</code></td>"
                         f"<td><code>{html.escape(record['reference'])}</code></td>"
                         f"<td>{record['reward']:.2f} ({html.escape(record['reason'])})</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def subset_accuracy(records: list[dict], ids: set[str], stage: str) -> dict[str, float]:
    """`accuracy_<stage>/<domain>` and `accuracy_mean_<stage>` over the records whose id is in `ids`.

    >>> recs = [{"id": "a", "domain": "ocr", "reward": 1.0}, {"id": "b", "domain": "ocr", "reward": 0.0}]
    >>> subset_accuracy(recs, {"a"}, "sft")
    {'accuracy_sft/ocr': 1.0, 'accuracy_mean_sft': 1.0}
    """
    by_domain: dict[str, list[float]] = defaultdict(list)
    for record in records:
        if record["id"] in ids:
            by_domain[record["domain"]].append(record["reward"])
    out = {f"accuracy_{stage}/{d}": statistics.fmean(v) for d, v in sorted(by_domain.items())}
    out[f"accuracy_mean_{stage}"] = statistics.fmean(out.values()) if out else 0.0
    return out


def paired_gain(before: list[dict], after: list[dict], stage: str) -> dict[str, float]:
    """How much `stage` added over the stage before it, on the prompts both answered (paired by id):
    `stage_gain_<stage>` = the change of `accuracy_mean` (the mean over domains of each domain's
    mean reward) and `stage_gain_se_<stage>`, its paired standard error (each domain's per-prompt
    differences, their variances combined as the mean over domains combines them). A gain above two
    standard errors is one the held-out prompts can tell from noise.

    >>> a = [{"id": i, "domain": "ocr", "reward": 0.0} for i in "abcd"]
    >>> b = [{"id": i, "domain": "ocr", "reward": r} for i, r in zip("abcd", (1.0, 1.0, 0.0, 1.0))]
    >>> {k: round(v, 4) for k, v in paired_gain(a, b, "sft").items()}
    {'stage_gain_sft': 0.75, 'stage_gain_se_sft': 0.25}
    """
    previous = {r["id"]: r["reward"] for r in before}
    diffs: dict[str, list[float]] = defaultdict(list)
    for record in after:
        if record["id"] in previous:
            diffs[record["domain"]].append(record["reward"] - previous[record["id"]])
    if not diffs:
        raise ValueError(f"paired_gain: {stage} shares no prompt with the stage before it")
    gain = statistics.fmean(statistics.fmean(d) for d in diffs.values())
    variance = sum(statistics.variance(d) / len(d) if len(d) > 1 else 0.0 for d in diffs.values()) / len(diffs) ** 2
    return {f"stage_gain_{stage}": gain, f"stage_gain_se_{stage}": variance ** 0.5}


def stage_gain_plot(metrics: dict[str, float], stages: list[str], path) -> None:
    """Accuracy per domain for each stage's checkpoint (same samples), as grouped bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = sorted({k.split("/", 1)[1] for k in metrics if k.startswith(f"accuracy_{stages[0]}/")})
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(domains)), 3.2))
    width = 0.8 / len(stages)
    for i, stage in enumerate(stages):
        ax.bar([x + (i - (len(stages) - 1) / 2) * width for x in range(len(domains))],
               [metrics.get(f"accuracy_{stage}/{d}", 0.0) for d in domains], width=width, label=stage)
    ax.set_xticks(list(range(len(domains))), domains, rotation=30)
    ax.set_ylim(0, 1)
    ax.set_title("held-out accuracy by training stage (same samples)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
