import shutil
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_salvage import original, property_case  # noqa: F401


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_many(original, tmp_path_factory, data):
    db = tmp_path_factory.mktemp("case") / "orchestra.db"
    for suffix in ("", "-wal"):
        if (original.parent / f"orchestra.db{suffix}").exists():
            shutil.copy(original.parent / f"orchestra.db{suffix}", db.parent / f"orchestra.db{suffix}")
    property_case(db, data)
    shutil.rmtree(db.parent)
