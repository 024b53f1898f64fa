import httpx


def test_smoke(alice: httpx.Client) -> None:
    r = alice.post(
        "/v1/tasks",
        json={"title": " hello ", "tags": ["a", "b"], "due_at": "2030-01-01T00:00:00+02:00"},
    )
    print(r.status_code, r.headers, r.text)
    assert r.status_code == 201
    r2 = alice.get("/v1/tasks")
    print(r2.status_code, r2.headers, r2.text)
    r3 = alice.patch(
        r.headers["location"], json={"completed": True}, headers={"If-Match": r.headers["etag"]}
    )
    print(r3.status_code, r3.headers, r3.text)
    r4 = alice.patch(
        r.headers["location"], json={"completed": True}, headers={"If-Match": r.headers["etag"]}
    )
    print(r4.status_code, r4.headers, r4.text)
    for s in [
        "-created_at",
        "due_at",
        "-due_at",
        "title",
        "-title",
        "priority",
        "-priority",
        "updated_at",
    ]:
        r5 = alice.get("/v1/tasks", params={"sort": s, "limit": 1, "q": "ell", "tag": "a"})
        assert r5.status_code == 200, r5.text
