"""The page counts in the CLI's words and number format (cli/output: counted, number)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from admin.catalog_docs import file_doc

from support import write_image


def test_the_page_counts_in_words_and_groups_thousands(web: Any, photos: Path, libwatch: Any, db: Any) -> None:
    write_image(photos / "2026/one.jpg", (10, 10))
    assert libwatch("scan", "photos").code == 0
    db.files.insert_many([file_doc("photos", f"bulk/{i:05d}.jpg", i) for i in range(1_200)])
    server = web()
    library = server.get("/libraries/photos").text
    assert "1 added, 1 collection added" in library  # not "1 collections added"
    assert not re.search(r"\b1 (collections|errors)\b", library)
    dashboard = server.get("/").text
    assert ">1,206<" in dashboard  # 6 images scanned and 1,200 records: digits grouped as on the command line
