"""Connecting to RabbitMQ: parameters, one-line failure reasons, closing quietly.

The bus package is the only part of libwatch that imports pika; these helpers
are shared by the topology calls, the publisher and the consumer.
"""
from __future__ import annotations

import logging
import os
import socket
from typing import Final

import pika
import pika.exceptions
from pika.adapters.utils.connection_workflow import (
    AMQPConnectionWorkflowFailed,
    AMQPConnectorException,
    AMQPConnectorPhaseErrorBase,
    AMQPConnectorStackTimeout,
)

from libwatch.config import mask_url
from libwatch.errors import BrokerUnavailable

log = logging.getLogger("libwatch.bus")
# pika logs every failed connection attempt with a traceback at ERROR; we raise
# one-line errors instead, so its records only show where logging is configured.
logging.getLogger("pika").addHandler(logging.NullHandler())

# A window of confirms must make progress within this long, and a connection the
# broker blocks (memory or disk alarm) is dropped after it, so nothing hangs forever.
CONFIRM_TIMEOUT_S: Final = 30.0


def reason(exc: BaseException) -> str:
    """The root cause of a pika connection failure, in a few words."""
    if isinstance(exc, AMQPConnectionWorkflowFailed) and exc.exceptions:
        return reason(exc.exceptions[-1])
    if isinstance(exc, AMQPConnectorPhaseErrorBase):
        return reason(exc.exception)
    if isinstance(exc, (pika.exceptions.ProbableAuthenticationError, pika.exceptions.AuthenticationError)):
        return "login refused (check the user name and password)"
    if isinstance(exc, pika.exceptions.ProbableAccessDeniedError):
        return "access to the virtual host refused"
    if isinstance(exc, (pika.exceptions.ConnectionClosed, pika.exceptions.ChannelClosed)):
        return f"{exc.reply_code} {exc.reply_text}"
    if isinstance(exc, (AMQPConnectorStackTimeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, pika.exceptions.AMQPConnectionError) and exc.args and isinstance(exc.args[0], BaseException):
        return reason(exc.args[0])
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def unavailable(url: str, exc: BaseException, doing: str = "cannot connect to") -> BrokerUnavailable:
    """The one-line error for a failed connection, naming the URL with its password masked."""
    return BrokerUnavailable(f"RabbitMQ {doing} {mask_url(url)}: {reason(exc)}")


def connection_name(role: str) -> str:
    """How the broker lists our connections (rabbitmqctl, management UI): role, host and pid."""
    return f"libwatch {role} {socket.gethostname()}:{os.getpid()}"


def parameters(url: str, timeout_s: float, role: str) -> pika.URLParameters:
    """pika's parameters for ``url`` with our timeouts and connection name; BrokerUnavailable when invalid."""
    try:
        params = pika.URLParameters(url)
    except (ValueError, TypeError) as exc:
        raise BrokerUnavailable(f"invalid AMQP URL {mask_url(url)}: {exc}") from exc
    params.socket_timeout = timeout_s
    params.stack_timeout = timeout_s
    params.blocked_connection_timeout = CONFIRM_TIMEOUT_S
    params.client_properties = {"connection_name": connection_name(role)}
    return params


def blocking(url: str, timeout_s: float, role: str) -> pika.BlockingConnection:
    """An open BlockingConnection, or BrokerUnavailable with a one-line reason."""
    params = parameters(url, timeout_s, role)
    try:
        return pika.BlockingConnection(params)
    except (pika.exceptions.AMQPError, AMQPConnectorException, OSError) as exc:
        raise unavailable(url, exc) from exc


def close_quietly(connection: pika.BlockingConnection) -> None:
    """Close the connection if it is open; a connection broken meanwhile is only logged at debug."""
    if connection.is_open:
        try:
            connection.close()
        except pika.exceptions.AMQPError:
            log.debug("closing an already broken RabbitMQ connection failed", exc_info=True)
