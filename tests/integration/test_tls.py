"""TLS on the edge–cloud link, with certificates the test makes: an edge that trusts the cloud's
CA gets the target's exact output; a plain-TCP edge, or one trusting another CA, is refused."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgespec.cli import main
from edgespec.config import LinkConfig, Mode, ModelConfig
from edgespec.edge.launch import start_edge
from edgespec.edge.request import GenerationRequest
from edgespec.processes import cloud_process
from edgespec.transport.client import LinkError
from tests.conftest import TinyPair
from tests.reference import reference_greedy


def self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that is its own CA; returns (cert, key) PEM paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("tls")
    return {"cloud": self_signed(folder, "cloud"), "stranger": self_signed(folder, "stranger")}


@pytest.fixture(scope="module")
def tls_cloud(tiny_pair: TinyPair, certificates: dict[str, tuple[Path, Path]]) -> Iterator[int]:
    cert, key = certificates["cloud"]
    with cloud_process(tiny_pair.target, "--tls-cert", str(cert), "--tls-key", str(key), "--threads", "1") as port:
        yield port


async def generate(draft: Path, link: LinkConfig) -> list[int]:
    runtime = await start_edge(ModelConfig(str(draft)), link)
    try:
        return await runtime.generate(GenerationRequest([5, 6, 7], 12, mode=Mode.SPEC, ignore_eos=True)).collect()
    finally:
        await runtime.aclose()


def test_an_edge_trusting_the_clouds_ca_gets_the_exact_output(
    tls_cloud: int, tiny_pair: TinyPair, certificates: dict[str, tuple[Path, Path]]
) -> None:
    link = LinkConfig(port=tls_cloud, tls_ca=str(certificates["cloud"][0]))
    assert asyncio.run(generate(tiny_pair.draft, link)) == reference_greedy(tiny_pair.target, [5, 6, 7], 12)


def test_an_edge_trusting_another_ca_is_refused(
    tls_cloud: int, tiny_pair: TinyPair, certificates: dict[str, tuple[Path, Path]]
) -> None:
    link = LinkConfig(port=tls_cloud, tls_ca=str(certificates["stranger"][0]))
    with pytest.raises(LinkError, match="CERTIFICATE_VERIFY_FAILED"):
        asyncio.run(generate(tiny_pair.draft, link))


def test_a_plain_tcp_edge_gets_no_session(tls_cloud: int, tiny_pair: TinyPair) -> None:
    with pytest.raises(LinkError, match="handshake"):
        asyncio.run(generate(tiny_pair.draft, LinkConfig(port=tls_cloud, connect_timeout_s=1.0)))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tls-cert", "a.pem"], "both --tls-cert and --tls-key"),
        (["--tls-cert", "a", "--tls-key", "b"], "does not exist"),
    ],
)
def test_bad_tls_flags_are_refused_before_loading(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["cloud", "--model", "m", *args])
    assert message in capsys.readouterr().err
