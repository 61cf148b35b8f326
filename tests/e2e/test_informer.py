"""Informers against the real API server: listing, events, a stop, a new listing that
reports what was deleted while nothing watched, and a core kind filtered by labels."""

from __future__ import annotations

import threading
from typing import Any

from kubernetes import client

from segue.controller.informer import Informer, ListFn, lister
from tests.e2e.conftest import Kube
from tests.e2e.support import apply, deployment, wait_until


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str | None, str, str]] = []
        self.listed = threading.Event()

    def deliver(self, type_: str | None, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        with self.lock:
            self.events.append((type_, meta["name"], str(meta.get("resourceVersion", ""))))

    def seen(self) -> list[tuple[str | None, str]]:
        with self.lock:
            return [(t, n) for t, n, _ in self.events]


def deployments(kube: Kube, namespace: str) -> ListFn:
    return lister(kube.api_client, "apps", "v1", "deployments", namespace)


def start(informer: Informer, recorder: Recorder) -> threading.Thread:
    thread = threading.Thread(
        target=informer.run, args=(recorder.deliver, recorder.listed.set), daemon=True
    )
    thread.start()
    return thread


def test_informer_lists_watches_and_a_new_listing_reports_deletions(
    kube: Kube, namespace: str
) -> None:
    apps = client.AppsV1Api(kube.api_client)
    apply(kube, namespace, deployment("first", "shop", 0))
    recorder = Recorder()
    informer = Informer("deployments", deployments(kube, namespace), recorder.deliver, lambda: None)
    thread = start(informer, recorder)
    assert recorder.listed.wait(30)
    assert recorder.seen() == [(None, "first")]

    apply(kube, namespace, deployment("second", "shop", 0))
    wait_until("second added", recorder.seen, lambda s: ("ADDED", "second") in s, timeout=30)
    apps.patch_namespaced_deployment_scale("first", namespace, {"spec": {"replicas": 1}})
    wait_until("first modified", recorder.seen, lambda s: ("MODIFIED", "first") in s, timeout=30)

    informer.stop()
    thread.join(10)
    assert not thread.is_alive(), "stop() ends the thread's read at once"

    # While nothing watches, "first" goes. The next informer carries what the first one
    # knew and starts with a listing, as after a 410 Gone (the unit tests force the 410
    # itself; a fresh API server may still serve the oldest versions from its cache): the
    # listing reports the deletion it could not see.
    apps.delete_namespaced_deployment("first", namespace)
    wait_until(
        "first gone",
        lambda: [d.metadata.name for d in apps.list_namespaced_deployment(namespace).items],
        lambda names: "first" not in names,
        timeout=30,
    )
    after = Recorder()
    again = Informer("deployments", deployments(kube, namespace), after.deliver, lambda: None)
    again.known = set(informer.known)
    thread = start(again, after)
    try:
        assert after.listed.wait(30)
        assert ("DELETED", "first") in after.seen()
        assert (None, "second") in after.seen()
        assert again.known == {(namespace, "second")}
    finally:
        again.stop()
        thread.join(10)


def test_a_labelled_core_kind_is_filtered_by_the_server(kube: Kube, namespace: str) -> None:
    core = client.CoreV1Api(kube.api_client)

    def config_map(name: str, labels: dict[str, str]) -> client.V1ConfigMap:
        meta = client.V1ObjectMeta(name=name, labels=labels)
        return client.V1ConfigMap(metadata=meta, data={"flags": "{}"})

    core.create_namespaced_config_map(namespace, config_map("flags", {"segue.dev/managed": "true"}))
    core.create_namespaced_config_map(namespace, config_map("other", {}))
    recorder = Recorder()
    informer = Informer(
        "configmaps",
        lister(kube.api_client, "", "v1", "configmaps", namespace, "segue.dev/managed=true"),
        recorder.deliver,
        lambda: None,
    )
    thread = start(informer, recorder)
    try:
        assert recorder.listed.wait(30)
        assert recorder.seen() == [(None, "flags")]
        # Losing the label is a deletion, as far as a filtered watch goes.
        core.patch_namespaced_config_map(
            "flags", namespace, {"metadata": {"labels": {"segue.dev/managed": None}}}
        )
        wait_until("flags unlabelled", recorder.seen, lambda s: ("DELETED", "flags") in s, 30)
        assert all(name != "other" for _, name in recorder.seen())
    finally:
        informer.stop()
        thread.join(10)
