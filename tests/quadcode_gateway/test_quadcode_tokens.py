"""Our ES256 JWTs and key pairs (README: "Server to server requests authorization")."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from quadcode_gateway.__main__ import main as gateway_cli
from quadcode_gateway.tokens import (
    Environment,
    KeyFileError,
    TokenSigner,
    generate_keypair,
    load_private_key,
    load_public_key,
)


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def key_pair(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "private.pem", tmp_path / "public.pem"
    generate_keypair(private, public)
    return private, public


def decode(token: str, public: Path, audience: str = "sandbox") -> dict[str, object]:
    claims: dict[str, object] = jwt.decode(
        token,
        load_public_key(public),
        algorithms=["ES256"],
        audience=audience,
        options={"verify_exp": False, "verify_iat": False},
    )
    return claims


@pytest.mark.unit
def test_token_carries_issuer_audience_iat_and_exp(key_pair: tuple[Path, Path]) -> None:
    private, public = key_pair
    clock = FakeClock(1_700_000_000.7)
    signer = TokenSigner.from_pem_file(private, issuer="acme", audience="sandbox", clock=clock)
    token = signer.token()
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    claims = decode(token, public)
    assert claims == {"iss": "acme", "aud": "sandbox", "iat": 1_700_000_000, "exp": 1_700_000_300}
    assert signer.authorization() == f"Bearer {token}"


@pytest.mark.unit
@pytest.mark.parametrize("environment", list(Environment))
def test_audience_is_the_environment(key_pair: tuple[Path, Path], environment: Environment) -> None:
    private, public = key_pair
    signer = TokenSigner.from_pem_file(private, issuer="acme", audience=environment.value)
    assert decode(signer.token(), public, environment.value)["aud"] == environment.value


@pytest.mark.unit
def test_unknown_environment_is_refused(key_pair: tuple[Path, Path]) -> None:
    with pytest.raises(ValueError):
        TokenSigner.from_pem_file(key_pair[0], issuer="acme", audience="staging")


@pytest.mark.unit
def test_token_is_reused_while_valid(key_pair: tuple[Path, Path]) -> None:
    clock = FakeClock(1_000.0)
    signer = TokenSigner.from_pem_file(
        key_pair[0], issuer="acme", audience="sandbox", lifetime=300, renew_margin=30, clock=clock
    )
    first = signer.token()
    clock.now += 269  # 31 s of lifetime left: still more than the margin
    assert signer.token() == first


@pytest.mark.unit
def test_token_is_renewed_before_it_expires(key_pair: tuple[Path, Path]) -> None:
    private, public = key_pair
    clock = FakeClock(1_000.0)
    signer = TokenSigner.from_pem_file(
        private, issuer="acme", audience="sandbox", lifetime=300, renew_margin=30, clock=clock
    )
    first = signer.token()
    clock.now += 270  # exactly the margin left: renew now, not in flight
    second = signer.token()
    assert second != first
    assert decode(second, public)["iat"] == 1_270
    assert decode(second, public)["exp"] == 1_570


@pytest.mark.unit
def test_invalidate_forces_a_fresh_token(key_pair: tuple[Path, Path]) -> None:
    clock = FakeClock(1_000.0)
    signer = TokenSigner.from_pem_file(key_pair[0], issuer="acme", audience="sandbox", clock=clock)
    first = signer.token()
    signer.invalidate()
    clock.now += 1
    assert signer.token() != first


@pytest.mark.unit
def test_lifetime_over_ten_minutes_is_refused(key_pair: tuple[Path, Path]) -> None:
    key = load_private_key(key_pair[0])
    TokenSigner(key, issuer="acme", audience="sandbox", lifetime=600)
    with pytest.raises(ValueError, match="lifetime"):
        TokenSigner(key, issuer="acme", audience="sandbox", lifetime=601)


@pytest.mark.unit
def test_renew_margin_must_be_shorter_than_lifetime(key_pair: tuple[Path, Path]) -> None:
    key = load_private_key(key_pair[0])
    with pytest.raises(ValueError, match="renew_margin"):
        TokenSigner(key, issuer="acme", audience="sandbox", lifetime=60, renew_margin=60)


@pytest.mark.unit
def test_empty_issuer_is_refused(key_pair: tuple[Path, Path]) -> None:
    with pytest.raises(ValueError, match="issuer"):
        TokenSigner(load_private_key(key_pair[0]), issuer="", audience="sandbox")


@pytest.mark.unit
def test_non_p256_key_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "p384.pem"
    path.write_bytes(
        ec.generate_private_key(ec.SECP384R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(KeyFileError, match="P-256"):
        load_private_key(path)
    with pytest.raises(KeyFileError, match="cannot load"):
        load_private_key(tmp_path / "missing.pem")


@pytest.mark.unit
def test_generated_keys_are_pem_p256_and_private_is_owner_only(
    key_pair: tuple[Path, Path],
) -> None:
    private, public = key_pair
    assert private.read_text().startswith("-----BEGIN EC PRIVATE KEY-----\n")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----\n")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert load_private_key(private).public_key().public_numbers() == (
        load_public_key(public).public_numbers()
    )


@pytest.mark.unit
def test_generate_keypair_refuses_to_replace_a_key(key_pair: tuple[Path, Path]) -> None:
    private, public = key_pair
    before = private.read_bytes()
    with pytest.raises(FileExistsError):
        generate_keypair(private, public)
    assert private.read_bytes() == before


@pytest.mark.unit
def test_keygen_cli_writes_private_and_public_pem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "keys"
    assert gateway_cli(["keygen", "--out-dir", str(out)]) == 0
    assert (out / "private.pem").is_file() and (out / "public.pem").is_file()
    assert "public.pem" in capsys.readouterr().out
    assert gateway_cli(["keygen", "--out-dir", str(out)]) == 1
    assert gateway_cli(["keygen", "--out-dir", str(out), "--force"]) == 0


@pytest.mark.integration
def test_keys_are_interchangeable_with_the_readmes_openssl_commands(
    tmp_path: Path, key_pair: tuple[Path, Path]
) -> None:
    assert shutil.which("openssl"), "openssl is part of the platform (.ci/run installs it)"
    # openssl derives from our private key exactly the public key we wrote...
    private, public = key_pair
    derived = subprocess.run(
        ["openssl", "ec", "-in", str(private), "-pubout"],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    assert derived == public.read_bytes()
    # ...and a key made by the README's commands has our file layout and signs with our signer.
    openssl_private, openssl_public = tmp_path / "o-private.pem", tmp_path / "o-public.pem"
    subprocess.run(
        [
            "openssl",
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            str(openssl_private),
        ],
        check=True,
        timeout=30,
    )
    subprocess.run(
        ["openssl", "ec", "-in", str(openssl_private), "-pubout", "-out", str(openssl_public)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    assert openssl_private.read_text().splitlines()[0] == private.read_text().splitlines()[0]
    assert openssl_public.read_text().splitlines()[0] == public.read_text().splitlines()[0]
    signer = TokenSigner.from_pem_file(openssl_private, issuer="acme", audience="production")
    assert decode(signer.token(), openssl_public, "production")["iss"] == "acme"
