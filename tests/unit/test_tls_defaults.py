"""TLS verification is on by default at every edge; the CA bundle adds trust, never removes it."""

import ssl

import certifi
import pika
import trustme

from common.http import ssl_context
from common.redis_store import connect_redis


def test_https_verifies_hostname_and_chain_with_the_public_roots():
    context = ssl_context(None)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert len(context.get_ca_certs()) > 50  # certifi's public roots


def test_the_ca_bundle_adds_its_ca_to_the_public_roots(tmp_path):
    bundle = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(bundle))
    public = len(ssl.create_default_context(cafile=certifi.where()).get_ca_certs())
    context = ssl_context(bundle)
    assert len(context.get_ca_certs()) == public + 1
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname


def test_amqps_and_rediss_verify_the_broker_and_redis_certificates():
    broker = pika.URLParameters("amqps://pwasync:secret@broker.contoso.com:5671/%2F")
    assert broker.ssl_options.context.verify_mode is ssl.CERT_REQUIRED
    assert broker.ssl_options.context.check_hostname
    connection = connect_redis("rediss://:secret@redis.contoso.com:6380/0").connection_pool
    made = connection.make_connection()
    assert made.cert_reqs is ssl.CERT_REQUIRED and made.check_hostname
