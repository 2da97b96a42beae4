"""The questions, pool sentence and retriever the demonstration tests share (test_demos*.py)."""

from rexrag.data.qa import QAExample

DOUBT = "<think> Maybe I misread the passage."
TWO_HOP = QAExample(
    "Where was the founder of Kor Works born?",
    ["Teford"],
    "world_2hop",
    "0",
    metadata={"chain": ["Kor Works", "Lou Brun"]},
)
ONE_HOP = QAExample(
    "Where was Lou Brun born?", ["Teford"], "world_1hop", "1", metadata={"chain": ["Lou Brun"]}
)


class BornInTeford:
    """A retriever whose every passage says the query was born in Teford (``k`` passages per query)."""

    def search(self, queries, k):
        return [
            [{"id": str(i), "contents": f"{q}\n{q} was born in Teford."} for i in range(k)] for q in queries
        ]
