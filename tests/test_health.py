async def test_healthz_and_readyz(client):
    response = await client.get("/healthz")
    assert response.status == 200
    assert (await response.json())["status"] == "ok"
    response = await client.get("/readyz")
    assert response.status == 200
    assert (await response.json())["status"] == "ready"
