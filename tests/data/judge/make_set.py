"""Write the judge calibration set: glossary outputs with planted faults, and their labels.

Each of 12 distributed-systems terms gets a correct entry and one entry with two planted
faults of the four kinds of issue #14 (a circular Definition, a Details section that never
compares, Related Terms that name nothing in the plan, an allowed but wrong category), cycling
so that each kind is planted six times: each criterion has 6 fails and 18 passes. The labels follow from what was planted, with
the reason a person would give; they were written and checked by hand along with the texts
below, not produced by a model.

    python tests/data/judge/make_set.py     (rewrites outputs/, plan.md and labels.yaml here)
"""

from __future__ import annotations

from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent

CRITERIA = {
    "not-circular": "the Definition explains the term in other words, without defining it by itself",
    "compares": "the Details section compares the term with a named alternative and says how they differ",
    "related-in-plan": "the Related Terms section names at least one other term of this plan",
    "right-category": "the category is the right one of the allowed values for this term, not merely an allowed one",
}
CATEGORIES = ("Consistency", "Concurrency", "Scalability", "Reliability")

# term: (slug, category, wrong allowed category, good definition, circular definition,
#        comparison, non-comparison, related terms in the plan, related terms outside it)
TERMS = [
    (
        "Quorum",
        "quorum",
        "Consistency",
        "Scalability",
        "The smallest number of replicas that must acknowledge a read or a write before the system treats it as done.",
        "A quorum is the quorum of replicas that a quorum-based system needs.",
        "Unlike a primary-backup scheme, where one node decides, a quorum lets any majority decide, so the loss of the primary does not stop writes.",
        "Quorums are configured per keyspace and are usually written as R and W.",
        ["Vector Clock", "Leader Election"],
        ["Blockchain", "Load Balancer"],
    ),
    (
        "Backpressure",
        "backpressure",
        "Reliability",
        "Consistency",
        "A signal from a slow consumer that tells its producers to send less, so that queues stay bounded.",
        "Backpressure is what happens when a system applies backpressure.",
        "Where load shedding drops the excess work, backpressure slows the sender down and loses nothing.",
        "Backpressure appears in TCP windows, reactive streams and message brokers.",
        ["Rate Limiting", "Circuit Breaker"],
        ["Garbage Collection", "Compiler"],
    ),
    (
        "Vector Clock",
        "vector-clock",
        "Consistency",
        "Scalability",
        "A list of per-node counters attached to each event, from which one can tell whether two events are ordered or concurrent.",
        "A vector clock is a clock made of vectors, used as a vector clock.",
        "A Lamport timestamp orders every pair of events, but only a vector clock can say that two events were concurrent.",
        "Vector clocks are stored with each version of a value.",
        ["Quorum", "Consistent Hashing"],
        ["Spreadsheet", "Cron Job"],
    ),
    (
        "Circuit Breaker",
        "circuit-breaker",
        "Reliability",
        "Concurrency",
        "A wrapper around remote calls that stops calling a failing service for a while, failing fast instead of waiting.",
        "A circuit breaker is a breaker for circuits that breaks the circuit.",
        "A retry keeps calling a failing service; a circuit breaker stops calling it until a probe succeeds.",
        "Circuit breakers have three states: closed, open and half-open.",
        ["Backpressure", "Rate Limiting"],
        ["Kernel", "Web Browser"],
    ),
    (
        "Optimistic Locking",
        "optimistic-locking",
        "Concurrency",
        "Consistency",
        "Letting transactions proceed without locks and rejecting a commit when the data changed since it was read.",
        "Optimistic locking is locking done optimistically.",
        "Pessimistic locking takes the lock before reading and makes others wait; optimistic locking lets everyone read and fails the late writer.",
        "Optimistic locking is often implemented with a version column.",
        ["Two-Phase Commit", "Vector Clock"],
        ["Photosynthesis", "Operating System"],
    ),
    (
        "Consistent Hashing",
        "consistent-hashing",
        "Scalability",
        "Reliability",
        "Placing keys and nodes on one hash ring so that adding or removing a node moves only the keys next to it.",
        "Consistent hashing is hashing that is consistent.",
        "With modulo hashing, adding one node remaps almost every key; with consistent hashing only about 1/N of the keys move.",
        "Consistent hashing is used by Dynamo, Cassandra and many caches.",
        ["Quorum", "Sharding"],
        ["JSON", "Regular Expression"],
    ),
    (
        "Leader Election",
        "leader-election",
        "Consistency",
        "Scalability",
        "The process by which the nodes of a cluster agree on one node to coordinate them, and agree again when it fails.",
        "Leader election is the election of a leader by electing one.",
        "A static primary must be replaced by an operator; leader election lets the cluster replace it itself within seconds.",
        "Leader election runs whenever the current leader stops sending heartbeats.",
        ["Quorum", "Two-Phase Commit"],
        ["Spell Checker", "Firewall"],
    ),
    (
        "Two-Phase Commit",
        "two-phase-commit",
        "Consistency",
        "Scalability",
        "A protocol in which a coordinator first asks every participant to prepare and commits only if all of them said yes.",
        "Two-phase commit is a commit done in two phases of committing.",
        "A saga commits each step on its own and compensates on failure; two-phase commit holds every participant's locks until all agree.",
        "Two-phase commit is used by XA transactions.",
        ["Leader Election", "Optimistic Locking"],
        ["Bitmap", "Search Engine"],
    ),
    (
        "Rate Limiting",
        "rate-limiting",
        "Reliability",
        "Scalability",
        "Capping how many requests a client may make in a window of time, and refusing the rest.",
        "Rate limiting is limiting the rate by means of a rate limit.",
        "A token bucket allows short bursts up to its size; a fixed window counter refuses everything past the limit until the window resets.",
        "Rate limits are usually reported in response headers.",
        ["Backpressure", "Circuit Breaker"],
        ["Printer Driver", "Compression"],
    ),
    (
        "Sharding",
        "sharding",
        "Scalability",
        "Reliability",
        "Splitting one dataset across several databases by a key, so that each holds and serves only part of it.",
        "Sharding is splitting data into shards, which is sharding.",
        "Replication copies all of the data to every node for availability; sharding gives each node a different part for capacity.",
        "Shards are usually sized to fit on one machine.",
        ["Consistent Hashing", "Quorum"],
        ["Screen Reader", "Keyboard"],
    ),
    (
        "Idempotency Key",
        "idempotency-key",
        "Reliability",
        "Concurrency",
        "A unique token a client sends with a request so that the server can recognise a retry and return the first outcome.",
        "An idempotency key is a key used for idempotency keys.",
        "Without a key the server must guess whether two identical payments are a retry; with one it knows, and charges once.",
        "Idempotency keys are kept for a limited time, often 24 hours.",
        ["Two-Phase Commit", "Rate Limiting"],
        ["Font", "Thermostat"],
    ),
    (
        "Gossip Protocol",
        "gossip-protocol",
        "Scalability",
        "Concurrency",
        "A way of spreading information in which each node periodically shares what it knows with a few random peers.",
        "A gossip protocol is a protocol for gossip that gossips.",
        "A central registry must be asked by every node; a gossip protocol needs no centre and still reaches every node in a logarithmic number of rounds.",
        "Gossip is used for membership and failure detection.",
        ["Consistent Hashing", "Leader Election"],
        ["Podcast", "Camera"],
    ),
]

FAULTS = ("not-circular", "compares", "related-in-plan", "right-category")
#: the six pairs of faults, each fault in three of them: twice through, each is planted six times
PAIRS = ((0, 1), (2, 3), (0, 2), (1, 3), (0, 3), (1, 2))


def entry(term, category, definition, details, related) -> str:
    return (
        f"---\nterm: {term}\ncategory: {category}\ntags: [distributed-systems, glossary]\n---\n\n"
        f"## Definition\n\n{definition}\n\n## Details\n\n{details}\n\n"
        f"## Related Terms\n\n" + ", ".join(related) + ".\n"
    )


REASONS = {
    "not-circular": ("pass", "the Definition says what {term} is in other words"),
    "compares": ("pass", "Details names an alternative and says how it differs"),
    "related-in-plan": ("pass", "Related Terms names {names}, which are terms of this plan"),
    "right-category": ("pass", "{category} is the category a reader would look for {term} under"),
}
FAULT_REASONS = {
    "not-circular": "the Definition defines {term} by repeating the term itself",
    "compares": "Details describes {term} but names no alternative to compare it with",
    "related-in-plan": "Related Terms names {names}, none of which is a term of this plan",
    "right-category": "{category} is an allowed category but {term} belongs under {right}",
}


def main() -> None:
    outputs = HERE / "outputs"
    outputs.mkdir(exist_ok=True)
    items = []
    rows = []
    for n, (term, slug, right, wrong, good_def, bad_def, compare, no_compare, in_plan, outside) in enumerate(TERMS):
        faults = [FAULTS[i] for i in PAIRS[n % len(PAIRS)]]
        for variant in ("good", "fault"):
            planted = faults if variant == "fault" else []
            category = wrong if "right-category" in planted else right
            related = outside if "related-in-plan" in planted else in_plan
            text = entry(
                term,
                category,
                bad_def if "not-circular" in planted else good_def,
                no_compare if "compares" in planted else compare,
                related,
            )
            filename = f"{slug}.{variant}.md"
            (outputs / filename).write_text(text, encoding="utf-8")
            labels = {}
            for criterion in CRITERIA:
                values = {"term": term, "names": " and ".join(related), "category": category, "right": right}
                if criterion in planted:
                    labels[criterion] = {"verdict": "fail", "reason": FAULT_REASONS[criterion].format(**values)}
                else:
                    verdict, reason = REASONS[criterion]
                    labels[criterion] = {"verdict": verdict, "reason": reason.format(**values)}
            items.append({"file": filename, "title": term, "planted": planted, "labels": labels})
            rows.append(f"| {term} | {filename} | sonnet | pending |")
    checklist = "".join(f"{i}. Judge: {text}\n" for i, text in enumerate(CRITERIA.values(), 1))
    plan = (
        "# Judge calibration: distributed systems glossary\n\n## Format Reference\noutputs/quorum.good.md\n\n"
        "## Output Directory\noutputs/\n\n## Content Rules\n- Every output needs front matter: term, category, tags\n"
        f"- category must be one of: {', '.join(CATEGORIES)}\n"
        "- Include Definition, Details, and Related Terms sections, in that order\n\n"
        f"## Validation Checklist\n{checklist}\n## Models\n- judge: sonnet\n\n## Phase 1\n"
        "| Title | Filename | Model | Status |\n|-------|----------|-------|--------|\n" + "\n".join(rows) + "\n"
    )
    (HERE / "plan.md").write_text(plan, encoding="utf-8")
    labels_doc = {
        "plan": "plan.md",
        "criteria": CRITERIA,
        "outputs": items,
    }
    header = (
        "# Judge calibration labels (issue #14): each output of outputs/ labelled pass/fail per criterion,\n"
        "# by hand, with the reason. 'planted' names the faults planted in it (none: a correct entry).\n"
        "# Regenerate with: python tests/data/judge/make_set.py\n"
    )
    (HERE / "labels.yaml").write_text(header + yaml.safe_dump(labels_doc, sort_keys=False, width=110), encoding="utf-8")


if __name__ == "__main__":
    main()
