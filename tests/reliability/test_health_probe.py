"""The MLflow health probe: a server that answers 5xx (a proxy in front of a dead MLflow) is unreachable; a 404
(a server without /health) still answers."""

import http.server
import threading

import mlflow
import pytest

from orchestration.resources import MLflowResource, MLflowUnreachableError


def serve(status: int):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_5xx_from_health_is_unreachable(status):
    server = serve(status)
    try:
        uri = f"http://127.0.0.1:{server.server_port}"
        with pytest.raises(MLflowUnreachableError) as err:
            MLflowResource(tracking_uri=uri).configure()
        assert str(err.value).startswith(f"MLflow tracking server at {uri} is unavailable: HTTP {status} ")
        assert str(err.value).endswith(f"(GET {uri}/health)")
    finally:
        server.shutdown()


def test_a_404_from_health_is_reachable():
    server = serve(404)
    tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    try:
        resource = MLflowResource(tracking_uri=f"http://127.0.0.1:{server.server_port}")
        resource.configure()  # no error: it answered
        assert resource.client.tracking_uri == f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        mlflow.set_tracking_uri(tracking)  # configure() set the process's URIs: give the other tests theirs back
        mlflow.set_registry_uri(registry)
