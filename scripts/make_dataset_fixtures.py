"""Writes the dataset-format fixtures of forge-runtime's record reader (data/records.rs tests):
the same GSM8K-shaped records as JSONL (the expected values), as a Parquet file (pyarrow's
default, snappy-compressed, as HF exports are) and as an HF `save_to_disk` DatasetDict with a
train and a test split (Arrow stream files plus JSON metadata, written by `datasets` itself).
Row 4 has a null answer: a bad record under `on_bad_record`.

Run: pip install datasets && python3 scripts/make_dataset_fixtures.py
"""
import json
import pathlib
import shutil

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "datasets"
ROWS = [
    {"id": 1, "question": "Ann has 3 apples and buys 4 more. How many?",
     "answer": "3 + 4 = 7\n#### 7", "tags": ["add"], "difficulty": 0.25},
    {"id": 2, "question": "A box holds 12 eggs. How many eggs in 5 boxes?",
     "answer": "12 * 5 = 60\n#### 60", "tags": ["mul", "easy"], "difficulty": 0.5},
    {"id": 3, "question": "Tom reads 1,200 pages in 4 days. Pages per day?",
     "answer": "1200 / 4 = 300\n#### 300", "tags": [], "difficulty": 0.75},
    {"id": 4, "question": "What is 9 minus 2?", "answer": None, "tags": ["sub"],
     "difficulty": None},
    {"id": 5, "question": "Half of 18, in dollars?", "answer": "#### $9",
     "tags": ["div"], "difficulty": 1.0},
    {"id": 6, "question": "\u00bfCu\u00e1nto es 2+2? \u2014 \"quoted\"", "answer": "#### 4",
     "tags": ["unicode"], "difficulty": 0.0},
]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "gsm8k-tiny.jsonl", "w") as f:
        for row in ROWS:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    table = pa.Table.from_pylist(ROWS)
    pq.write_table(table, OUT / "gsm8k-tiny.parquet")
    disk = OUT / "gsm8k-tiny-disk"
    shutil.rmtree(disk, ignore_errors=True)
    datasets.DatasetDict({
        "train": datasets.Dataset.from_list(ROWS[:4]),
        "test": datasets.Dataset.from_list(ROWS[4:]),
    }).save_to_disk(str(disk))


if __name__ == "__main__":
    main()
