"""A corpus of manifests broken the way copied YAML breaks (issue 14, section 3).

Each file in tests/broken_manifests/ starts with two comment lines:

    # expect: REGEX            the message must contain this (the fix: closest valid field or value)
    # at: LINE KIND/NAME PATH  where it must be reported ('-' for no kind, name or path)

The test loads each file as a student would and checks that one reported problem carries exactly
that file, line, object, field path and text. Loading is all-or-nothing, so a broken file applied
to a running cluster must leave it as it was: that is checked on LocalCluster.apply.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from labkit.cluster import LocalCluster
from labkit.manifests import ManifestError, load_file

CORPUS = Path(__file__).parent / "broken_manifests"
CASES = sorted(CORPUS.glob("*.yaml"))


def _expectation(path: Path) -> tuple[str, int, str | None, str | None, str]:
    expect, at = path.read_text(encoding="utf-8").splitlines()[:2]
    assert expect.startswith("# expect: ") and at.startswith("# at: "), f"{path}: bad header"
    line, obj, field_path = at.removeprefix("# at: ").split(" ", 2)
    kind, name = obj.split("/", 1)
    return expect.removeprefix("# expect: "), int(line), None if kind == "-" else kind, \
        None if name == "-" else name, "" if field_path == "-" else field_path


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30, [c.name for c in CASES]


@pytest.mark.parametrize("path", CASES, ids=[c.stem for c in CASES])
def test_broken_manifest_names_file_line_field_and_fix(path: Path) -> None:
    pattern, line, kind, name, field_path = _expectation(path)
    with pytest.raises(ManifestError) as caught:
        load_file(path)
    matching = [e for e in caught.value.errors if re.search(pattern, e.message)]
    assert matching, f"no message matches {pattern!r}:\n{caught.value}"
    issue = matching[0]
    assert (issue.file, issue.line, issue.kind, issue.name, issue.path) == \
        (str(path), line, kind, name, field_path), str(issue)
    # The one-line form students read: FILE:LINE: Kind/name: field.path: message
    assert str(issue).startswith(f"{path}:{line}: "), str(issue)
    if field_path:
        assert f": {field_path}: " in str(issue), str(issue)


GOOD_SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
    - port: 80
"""


def test_a_broken_file_applies_nothing(tmp_path: Path) -> None:
    # A valid Service first, then a document copied with a typo: neither may be applied.
    mixed = tmp_path / "mixed.yaml"
    broken = (CORPUS / "svc-targetport-typo.yaml").read_text(encoding="utf-8")
    mixed.write_text(GOOD_SERVICE + "---\n" + broken, encoding="utf-8")
    changed = tmp_path / "changed.yaml"
    changed.write_text(GOOD_SERVICE.replace("port: 80", "port: 81") + "---\n" + broken,
                       encoding="utf-8")
    with LocalCluster() as cluster:
        with pytest.raises(ManifestError, match=r"did you mean 'targetPort'"):
            cluster.apply(mixed)
        assert [o.metadata.name for o in cluster.objects()] == []

        cluster.apply(GOOD_SERVICE)
        before = [o.model_dump() for o in cluster.objects()]
        with pytest.raises(ManifestError, match=rf"{re.escape(str(changed))}:\d+: Service/hello: "):
            cluster.apply(changed)
        assert [o.model_dump() for o in cluster.objects()] == before
