"""The LitServe internals this server relies on (app/litserve_internals.py) are still what they were in the pinned version.

An upgrade of LitServe must fail here, loudly, naming what to re-read, and never in a running server. Each check says
which part of app/litserve_internals.py depends on it. No server is started: these read LitServe's code."""

import inspect
import multiprocessing.managers

import litserve
import pytest
from litserve.loops import base as loops_base
from litserve.loops import simple_loops
from litserve.transport.base import MessageTransport
from litserve.utils import LitAPIStatus, ResponseBufferItem, WorkerSetupStatus

from app import litserve_internals
from app.litserve_internals import TriageServer

pytestmark = pytest.mark.shapeless  # LitServe's names, whatever the pipeline

REREAD = "LitServe changed {what}: re-read app/litserve_internals.py ({where}), written against LitServe 0.2.19"

# every LitServer method TriageServer overrides, with the parameters it was written against
OVERRIDDEN = {
    "run": [
        "self",
        "host",
        "port",
        "num_api_servers",
        "log_level",
        "generate_client_file",
        "api_server_worker_type",
        "pretty_logs",
        "kwargs",
    ],
    "_init_manager": ["self", "num_api_servers"],
    "lifespan": ["self", "app"],
    "_start_server": ["self", "port", "num_uvicorn_servers", "log_level", "sockets", "uvicorn_worker_type", "kwargs"],
    "_start_worker_monitoring": ["self", "manager", "uvicorn_workers"],
    "_perform_graceful_shutdown": ["self", "manager", "uvicorn_workers", "shutdown_reason"],
}
# LitServer methods called with these parameters: the request queue's slot, the key, LitServe's own sequence
CALLED = {
    "_get_request_queue": ["self", "api_path"],  # where the workers get RequestQueue from
    "setup_auth": ["self", "lit_api"],  # the API key on app/api.py's routes
    "_register_api_endpoints": ["self", "lit_api", "request_type", "response_type"],  # registers POST /predict (take_routes)
}
# attributes of LitServer read or set, and where in LitServe's source they are made
ATTRIBUTES = {
    "workers_setup_status": "_init_manager",  # workers_ready()
    "_shutdown_event": "__init__",  # request_shutdown()
    "response_buffer": "__init__",  # ask_worker()
    "litapi_request_queues": "__init__",  # TriageServer._init_manager
    "monitor_internal": "__init__",  # TriageServer.__init__ (no constructor argument)
    "uvicorn_graceful_timeout": "__init__",  # TriageServer.__init__ (no constructor argument)
    "inference_workers": "run",  # TriageServer._die
    "_transport": "_init_manager",  # TriageServer._init_manager puts AnswerTransport there
    "_disable_openapi_url": "__init__",  # TriageServer.__init__ (after the app is built: only the Swagger log line)
}


def test_litserve_is_the_pinned_version():
    assert litserve.__version__ == litserve_internals.PINNED, REREAD.format(
        what=f"version ({litserve.__version__}, pinned {litserve_internals.PINNED})", where="every name in its docstring"
    )


@pytest.mark.parametrize("name", sorted(OVERRIDDEN))
def test_each_overridden_method_is_still_there_with_its_parameters(name):
    method = getattr(litserve.LitServer, name, None)
    assert method is not None, REREAD.format(what=f"LitServer.{name} (gone)", where=f"TriageServer.{name}")
    assert list(inspect.signature(method).parameters) == OVERRIDDEN[name], REREAD.format(
        what=f"LitServer.{name}'s parameters", where=f"TriageServer.{name}"
    )


def test_triage_server_overrides_only_the_methods_pinned_here():
    """A new override must be added to OVERRIDDEN (and to app/litserve_internals.py's docstring)."""
    overridden = {name for name in vars(TriageServer) if name in vars(litserve.LitServer) and not name.startswith("__")}
    assert overridden == set(OVERRIDDEN), overridden ^ set(OVERRIDDEN)


@pytest.mark.parametrize("name", sorted(CALLED))
def test_each_called_method_keeps_its_parameters(name):
    method = getattr(litserve.LitServer, name, None)
    assert method is not None and list(inspect.signature(method).parameters) == CALLED[name], REREAD.format(
        what=f"LitServer.{name}", where="its docstring's list"
    )


@pytest.mark.parametrize("name", sorted(ATTRIBUTES))
def test_each_attribute_read_or_set_is_still_made_by_litserve(name):
    source = inspect.getsource(getattr(litserve.LitServer, ATTRIBUTES[name]))
    assert f"self.{name} = " in source or f"self.{name}: " in source, REREAD.format(
        what=f"LitServer.{name} (no longer made in {ATTRIBUTES[name]})", where="its docstring's list"
    )


def test_run_binds_the_port_with_uvicorn_before_the_workers_start():
    """TriageServer.run answers on the socket LitServe's run() binds (uvicorn.Config.bind_socket), before the workers start."""
    run = inspect.getsource(litserve.LitServer.run)
    assert run.index("config.bind_socket()") < run.index("self.launch_inference_worker(") < run.index("self._start_server("), REREAD.format(
        what="LitServer.run's order (bind, workers, HTTP process)", where="TriageServer.run and StartingPage"
    )


def test_the_response_buffer_and_status_values_are_as_read():
    """ask_worker() fills the response buffer as LitServe's request handler does and reads its statuses."""
    assert {"event", "response", "worker_id"} <= set(ResponseBufferItem.__dataclass_fields__), REREAD.format(
        what="ResponseBufferItem", where="ask_worker"
    )
    assert (LitAPIStatus.ERROR, WorkerSetupStatus.READY) == ("ERROR", "ready"), REREAD.format(what="its statuses", where="ask_worker")
    handler = inspect.getsource(litserve.server.BaseRequestHandler._submit_request)
    assert "request_queue.put((response_queue_id, uid, time.monotonic(), payload))" in handler, REREAD.format(
        what="the request queue's item", where="ask_worker"
    )


def test_the_workers_read_the_queue_as_request_queue_serves_it():
    """RequestQueue stands in for the Manager's queue: the loops call get(timeout=), get(block=, timeout=), get_nowait()."""
    loops = inspect.getsource(loops_base) + inspect.getsource(simple_loops)
    for call in ("request_queue.get_nowait()", "request_queue.get(timeout=", "request_queue.get(block=block, timeout=timeout)"):
        assert call in loops, REREAD.format(what=f"how its loops read the request queue ({call})", where="RequestQueue")
    assert "self.litapi_request_queues[lit_api.api_path] = manager.Queue()" in inspect.getsource(litserve.LitServer._init_manager)


def test_litserve_registers_the_routes_this_server_replaces():
    server = litserve.LitServer(litserve.test_examples.SimpleLitAPI(), accelerator="cpu")
    paths = {getattr(route, "path", None) for route in server.app.router.routes}
    assert set(litserve_internals.LITSERVE_ROUTES) <= paths, REREAD.format(what="the routes it registers", where="take_routes")
    taken = litserve_internals.take_routes(server)
    left = {getattr(route, "path", None) for route in server.app.router.routes}
    assert set(taken) == set(litserve_internals.LITSERVE_ROUTES) and not left & set(taken)
    register = inspect.getsource(litserve.LitServer._register_api_endpoints)
    assert "EventTypes.ON_SERVER_START" in register, REREAD.format(what="where ON_SERVER_START fires", where="take_routes")


def test_the_queue_timeout_line_is_still_logged_where_it_is_renamed():
    assert simple_loops.logger.name == "litserve.loops.simple_loops"
    assert "waiting in the queue for too long" in inspect.getsource(simple_loops), REREAD.format(
        what="its queue-timeout log line", where="name_the_queue_timeout"
    )


def test_disable_openapi_url_after_init_only_silences_the_swagger_line():
    """TriageServer sets it once the app is built with /openapi.json: run() reads it for its log line, nothing else."""
    source = inspect.getsource(litserve.LitServer)
    assert source.count("_disable_openapi_url") == 2 and "if not self._disable_openapi_url:" in inspect.getsource(litserve.LitServer.run)
    server = TriageServer(litserve.test_examples.SimpleLitAPI(), accelerator="cpu", graceful_timeout=1)
    assert server.app.openapi_url == "/openapi.json"


def test_the_shutdown_event_is_what_run_waits_on():
    """request_shutdown() sets it, as LitServe's /shutdown does; the supervisor reads the manager's process."""
    assert "self._shutdown_event.wait()" in inspect.getsource(litserve.LitServer.run), REREAD.format(
        what="what run() waits on", where="request_shutdown"
    )
    assert "self._process" in inspect.getsource(multiprocessing.managers.BaseManager.start)


def test_the_answers_transport_is_what_the_workers_and_the_http_process_use():
    """AnswerTransport stands in for the Manager's queues: the workers call send(item, consumer_id=), the HTTP process
    areceive(consumer_id) in its lifespan; a new abstract method would be left out."""
    assert MessageTransport.__abstractmethods__ == {"send", "areceive"}, REREAD.format(what="MessageTransport", where="AnswerTransport")
    assert "transport.send((uid, (response_data, status, response_type, self.worker_id)), consumer_id=response_queue_id)" in (
        inspect.getsource(loops_base.LitLoop.put_response)
    ), REREAD.format(what="how workers send answers", where="AnswerTransport")
    assert "await transport.areceive(consumer_id)" in inspect.getsource(litserve.server.response_queue_to_buffer)
    assert "self._transport = create_transport_from_config" in inspect.getsource(litserve.LitServer._init_manager)
    for worker_start in (litserve.LitServer.launch_inference_worker, litserve.LitServer.launch_single_inference_worker):
        assert "self._transport," in inspect.getsource(worker_start), REREAD.format(what="what workers get", where="AnswerTransport")


def test_no_auth_is_litserve_s_check_when_there_is_no_key():
    """key_dependencies() leaves it out: a sync dependency costs a thread-pool hop per request."""
    server = litserve.LitServer(litserve.test_examples.SimpleLitAPI(), accelerator="cpu")
    assert server.setup_auth() is litserve.server.no_auth and litserve_internals.key_dependencies(server) == []
