"""LoCoMo question answering from retrieved memory, scored the official way.

For each question the retriever (the in-library router, or a memos server with
``--base-url``) returns the top turns; the answerer reads them, with their session dates,
and answers briefly. Scoring follows the LoCoMo paper's evaluation:

- answers and predictions are lower-cased, stripped of punctuation and articles, stemmed
  (Snowball English via PyStemmer; the original uses NLTK's Porter — nearly identical on
  these short answers), and compared by token F1;
- category 1 (multi-hop): the gold answer is split on commas; each part scores its best
  match among the prediction's comma-separated parts; the mean is the score;
- category 3 (open-domain): only the gold answer's first ``;`` alternative counts;
- category 5 (adversarial, unanswerable): correct (1) only when the prediction says the
  information is not available; its ``adversarial_answer`` is a trap, never a gold answer.

Answerers: ``offline`` (extractive: the best retrieved turn, without its speaker — a floor
that shows what retrieval alone gives), ``bundled`` (memos' own model, when prepared) and
any litellm model name.
"""

from __future__ import annotations

import json
import re
import string
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ABSTAIN = "No information available"
ANSWER_PROMPT = """You answer questions about a long conversation between two people, using
only the memories below (turns of the conversation with their dates).
Answer with a short phrase (a few words), not a sentence. Resolve relative dates ("last
week") against the memory's date and answer with the date itself. If the memories do not
contain the answer, reply exactly: {abstain}

Memories:
{memories}

Question: {question}
Answer:"""
ANSWER_PROMPT_VERSION = "locomo-qa/1"

#: ``answer(question, memories) -> str``; memories are prompt-ready lines, best first.
Answerer = Callable[[str, Sequence[str]], str]


# ---------------------------------------------------------------------------- scoring
_STEMMER: Any = None


def _stem(tokens: list[str]) -> list[str]:
    global _STEMMER
    if _STEMMER is None:
        import Stemmer

        _STEMMER = Stemmer.Stemmer("english")
    return list(_STEMMER.stemWords(tokens))


def normalize(text: str) -> list[str]:
    """Lower-case, drop punctuation and articles, split, stem."""
    text = str(text).lower().replace(",", " ")
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the|and)\b", " ", text)
    return _stem(text.split())


def token_f1(prediction: str, gold: str) -> float:
    pred, ref = normalize(prediction), normalize(gold)
    common = Counter(pred) & Counter(ref)
    same = sum(common.values())
    if not pred or not ref or same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def score_answer(prediction: str, gold: str | None, category: int) -> float:
    """The official LoCoMo score of one answer, in [0, 1]."""
    if category == 5:
        said = prediction.lower()
        return float("no information available" in said or "not mentioned" in said)
    if gold is None:
        return 0.0
    gold = str(gold)
    if category == 3:
        gold = gold.split(";")[0].strip()
    if category == 1:
        parts = [p.strip() for p in prediction.split(",") if p.strip()] or [prediction]
        golds = [g.strip() for g in gold.split(",") if g.strip()] or [gold]
        return float(np.mean([max(token_f1(p, g) for p in parts) for g in golds]))
    return token_f1(prediction, gold)


# ---------------------------------------------------------------------------- answerers
def offline_answer(question: str, memories: Sequence[str]) -> str:
    """The best retrieved memory's text (speaker and date removed), or the abstention."""
    if not memories:
        return ABSTAIN
    best = memories[0]
    best = re.sub(r"^\[[^\]]*\]\s*", "", best)       # the date
    return re.sub(r"^[^:]{1,40}:\s*", "", best)     # the speaker


def litellm_answerer(model: str, **completion_kwargs: Any) -> Answerer:
    def answer(question: str, memories: Sequence[str]) -> str:
        import os

        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        prompt = ANSWER_PROMPT.format(abstain=ABSTAIN, memories="\n".join(memories),
                                      question=question)
        reply = litellm.completion(model=model, messages=[{"role": "user", "content": prompt}],
                                   temperature=0, max_tokens=48, **completion_kwargs)
        return str(reply.choices[0].message.content or "").strip()

    return answer


def bundled_answerer(data_dir: str | None = None) -> Answerer:
    from memos.backbone.checkpoint import load_backbone

    backbone = load_backbone(data_dir)

    def answer(question: str, memories: Sequence[str]) -> str:
        prompt = ANSWER_PROMPT.format(abstain=ABSTAIN, memories="\n".join(memories),
                                      question=question)
        text = backbone.generate(backbone.chat_prompt([{"role": "user", "content": prompt}]),
                                 max_new_tokens=32)
        return text.strip().splitlines()[0] if text.strip() else ABSTAIN

    return answer


def make_answerer(name: str) -> Answerer:
    if name == "offline":
        return offline_answer
    if name == "bundled":
        return bundled_answerer()
    return litellm_answerer(name)


# ---------------------------------------------------------------------------- run
def run_locomo_qa(data_path: str | Path, *, answerer: str | Answerer = "offline",
                  retriever_factory: Callable[[], Any] | None = None, top_k: int = 10,
                  conversations: Sequence[str] | None = None,
                  max_questions: int | None = None, json_path: str | Path | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """Answer every question (categories 1-5) from the top ``top_k`` retrieved turns."""
    from tqdm.auto import tqdm

    from memos.embed import default_embedder
    from memos.eval.locomo import QueryEmbeddings, RouterRetriever, load_locomo

    answer = make_answerer(answerer) if isinstance(answerer, str) else answerer
    records = {r["sample_id"]: r for r in json.loads(Path(data_path).read_text())}
    convs = load_locomo(data_path, conversations=conversations)
    embedder = default_embedder()
    scores: dict[int, list[float]] = {c: [] for c in range(1, 6)}
    latencies: list[float] = []
    examples: list[dict[str, Any]] = []
    for conv in tqdm(convs, desc="locomo qa", disable=not progress):
        retriever = (retriever_factory() if retriever_factory is not None
                     else RouterRetriever(embedder, QueryEmbeddings(embedder)))
        retriever.ingest(conv)
        turn_of = {t.dia_id: t for t in conv.turns}
        date_of = {s.index: s.date_time for s in conv.sessions}
        qa = records[conv.sample_id]["qa"]
        if max_questions is not None:
            qa = qa[:max_questions]
        for item in tqdm(qa, desc=conv.sample_id, leave=False, disable=not progress):
            category = int(item.get("category", 0))
            if category not in scores:
                continue
            found = retriever.search(item["question"], top_k=top_k)
            memories = [f"[{date_of.get(turn_of[d].session) or 'undated'}] {turn_of[d].text}"
                        for d in found.turns[:top_k] if d in turn_of]
            t = time.perf_counter()
            prediction = answer(item["question"], memories)
            latencies.append((time.perf_counter() - t) * 1000)
            gold = None if category == 5 else item.get("answer")
            score = score_answer(prediction, gold, category)
            scores[category].append(score)
            if len(examples) < 20:
                examples.append({"question": item["question"], "category": category,
                                 "gold": gold, "prediction": prediction, "score": score})
    answered = [s for c in range(1, 5) for s in scores[c]]
    report: dict[str, Any] = {
        "dataset": str(data_path), "answerer": answerer if isinstance(answerer, str)
        else getattr(answerer, "__name__", "custom"), "prompt_version": ANSWER_PROMPT_VERSION,
        "top_k": top_k, "scoring": "official LoCoMo token F1 (stemmed); cat 1 split on commas; "
        "cat 5 correct only when the answer says the information is not available",
        "f1_categories_1_4": round(100 * float(np.mean(answered)), 2) if answered else None,
        "by_category": {str(c): {"n": len(v), "score": round(100 * float(np.mean(v)), 2)
                                 if v else None} for c, v in scores.items()},
        "answer_ms_p50": round(float(np.median(latencies)), 2) if latencies else None,
        "examples": examples,
    }
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report, indent=2) + "\n")
    print(f"LoCoMo QA  answerer={report['answerer']}  top_k={top_k}")
    print(f"  F1 (categories 1-4): {report['f1_categories_1_4']}")
    for c, v in report["by_category"].items():
        print(f"  category {c}: {v['score']}  (n={v['n']})")
    return report
