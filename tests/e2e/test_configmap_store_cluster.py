"""The ConfigMap store against the real API server: sizes, listing, trace parts."""

from __future__ import annotations

import pytest
from stagecoach.store import SIZE_BUDGET, ConfigMapStore, NotFound, TooLarge
from stagecoach.store.configmap import RestClient, RestConfigMapClient

from tests.cluster.controlplane import ControlPlane

pytestmark = pytest.mark.cluster


async def test_configmap_store_round_trip(kube_cluster: ControlPlane,
                                          kube_namespace: str) -> None:
    rest = await RestClient.connect(str(kube_cluster.kubeconfig))
    try:
        store = ConfigMapStore(RestConfigMapClient(rest), kube_namespace, "demo")
        await store.put("outputs/a/1.json", b'{"format":"json","value":1}')
        assert await store.get("outputs/a/1.json") == b'{"format":"json","value":1}'
        with pytest.raises(NotFound):
            await store.get("outputs/a/2.json")
        # The budget is what the API server really accepts (it allows 1 MiB of data).
        near = b"x" * (SIZE_BUDGET - 2_000)
        await store.put("outputs/big/1.json", near)
        assert await store.get("outputs/big/1.json") == near
        with pytest.raises(TooLarge) as err:
            await store.put("outputs/huge/1.json", b"x" * (SIZE_BUDGET + 1))
        assert err.value.size > SIZE_BUDGET
        await store.append_trace("w1", [{"ts": "1", "type": "A"}])
        await store.append_trace("w1", [{"ts": "3", "type": "C"}])
        await store.append_trace("w2", [{"ts": "2", "type": "B"}])
        assert [e["type"] for e in await store.read_trace()] == ["A", "B", "C"]
        assert await store.list("outputs/") == ["outputs/a/1.json", "outputs/big/1.json"]
    finally:
        await rest.close()
