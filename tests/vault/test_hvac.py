"""hvac (pinned, unmodified) against a live `tokenvault serve`: the Vault-compatible API as
the most used Vault client drives it. Run by scripts/vault-clients, which starts the
server and sets VAULT_ADDR and TOKENVAULT_TLS_DIR (the development certificates)."""

import base64
import os
import unittest

import hvac
from hvac import exceptions

URL = os.environ["VAULT_ADDR"]
TLS = os.environ["TOKENVAULT_TLS_DIR"]


def b64(s):
    return base64.b64encode(s.encode()).decode()


def client(name, token=None, strict_http=False):
    return hvac.Client(
        url=URL,
        token=token,
        verify=os.path.join(TLS, "ca.pem"),
        cert=(os.path.join(TLS, f"{name}.pem"), os.path.join(TLS, f"{name}-key.pem")),
        strict_http=strict_http,
    )


def logged_in(name, **kw):
    c = client(name, **kw)
    c.auth.cert.login()
    return c


class CertLogin(unittest.TestCase):
    def test_login_gives_a_token_the_client_then_uses(self):
        c = client("app")
        self.assertFalse(c.is_authenticated())
        resp = c.auth.cert.login()
        token = resp["auth"]["client_token"]
        self.assertTrue(token.startswith("hvs."))
        self.assertEqual(c.token, token)
        self.assertTrue(c.is_authenticated())
        data = c.auth.token.lookup_self()["data"]
        self.assertEqual(data["display_name"], "cert-app")
        self.assertGreater(data["ttl"], 0)

    def test_a_token_replayed_with_another_certificate_is_forbidden(self):
        token = logged_in("app").token
        # The auditor may use its own session; the app's token on its connection is refused.
        thief = client("auditor", token=token)
        self.assertFalse(thief.is_authenticated())
        with self.assertRaises(exceptions.Forbidden):
            thief.auth.token.lookup_self()
        with self.assertRaises(exceptions.Forbidden):
            thief.secrets.transit.list_keys()
        self.assertIn("pii", logged_in("auditor").secrets.transit.list_keys()["data"]["keys"])

    def test_renew_and_revoke(self):
        c = logged_in("app")
        resp = c.auth.token.renew_self(increment="60s")
        self.assertGreater(resp["auth"]["lease_duration"], 0)
        c.auth.token.revoke_self()
        self.assertFalse(c.is_authenticated())
        with self.assertRaises(exceptions.Forbidden):
            c.auth.token.lookup_self()


class Transit(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.app = logged_in("app")
        cls.auditor = logged_in("auditor")

    def test_encrypt_decrypt_round_trip_with_associated_data(self):
        t = self.app.secrets.transit
        ct = t.encrypt_data("pii", plaintext=b64("4111 and more"), associated_data=b64("row-1"))
        ct = ct["data"]["ciphertext"]
        self.assertTrue(ct.startswith("vault:v1:"))
        pt = t.decrypt_data("pii", ciphertext=ct, associated_data=b64("row-1"))
        self.assertEqual(pt["data"]["plaintext"], b64("4111 and more"))
        with self.assertRaises(exceptions.InvalidRequest):
            t.decrypt_data("pii", ciphertext=ct, associated_data=b64("row-2"))

    def test_batches_echo_references_and_rewrap(self):
        t = self.app.secrets.transit
        items = [{"plaintext": b64(f"v{i}"), "reference": f"r{i}"} for i in range(3)]
        out = t.encrypt_data("pii", batch_input=items)["data"]["batch_results"]
        self.assertEqual([o["reference"] for o in out], ["r0", "r1", "r2"])
        cts = [{"ciphertext": o["ciphertext"], "reference": o["reference"]} for o in out]
        back = t.decrypt_data("pii", batch_input=cts)["data"]["batch_results"]
        self.assertEqual([b["plaintext"] for b in back], [b64(f"v{i}") for i in range(3)])
        again = t.rewrap_data("pii", ciphertext=out[0]["ciphertext"])["data"]["ciphertext"]
        self.assertTrue(again.startswith("vault:v"))
        self.assertEqual(t.decrypt_data("pii", ciphertext=again)["data"]["plaintext"], b64("v0"))
        with self.assertRaises(exceptions.InvalidRequest):
            t.decrypt_data("pii", batch_input=cts + [{"ciphertext": "vault:v1:AAAA", "reference": "bad"}])

    def test_keys_list_both_spellings_read_and_errors(self):
        listed = self.auditor.secrets.transit.list_keys()["data"]["keys"]
        self.assertIn("pii", listed)
        strict = logged_in("auditor", strict_http=True)
        self.assertEqual(strict.secrets.transit.list_keys()["data"]["keys"], listed)
        key = self.auditor.secrets.transit.read_key("pii")["data"]
        self.assertEqual(key["type"], "aes256-gcm96")
        self.assertGreaterEqual(key["latest_version"], 1)
        with self.assertRaises(exceptions.InvalidPath):
            self.auditor.secrets.transit.read_key("nosuchkey")
        with self.assertRaises(exceptions.Forbidden):
            self.app.secrets.transit.list_keys()
        with self.assertRaises(exceptions.InvalidRequest):
            self.auditor.secrets.transit.export_key("pii", key_type="encryption-key")
        with self.assertRaises(exceptions.InvalidRequest):
            self.auditor.secrets.transit.backup_key("pii")

    def test_data_keys_random_bytes_and_hashes(self):
        t = self.app.secrets.transit
        dk = t.generate_data_key("pii", key_type="plaintext")["data"]
        self.assertEqual(len(base64.b64decode(dk["plaintext"])), 32)
        opened = t.decrypt_data("pii", ciphertext=dk["ciphertext"])["data"]["plaintext"]
        self.assertEqual(opened, dk["plaintext"])
        wrapped = t.generate_data_key("pii", key_type="wrapped", bits=512)["data"]
        self.assertNotIn("plaintext", wrapped)
        self.assertTrue(wrapped["ciphertext"].startswith("vault:v"))
        raw = t.generate_random_bytes(n_bytes=16, output_format="hex")["data"]["random_bytes"]
        self.assertEqual(len(bytes.fromhex(raw)), 16)
        digest = t.hash_data(hash_input=b64("abc"), algorithm="sha2-256")["data"]["sum"]
        self.assertEqual(digest, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")

    def test_hmac_and_its_verification(self):
        t = self.app.secrets.transit
        mac = t.generate_hmac("pii", hash_input=b64("message"))["data"]["hmac"]
        self.assertTrue(mac.startswith("vault:v1:"))
        self.assertTrue(t.verify_signed_data("pii", hash_input=b64("message"), hmac=mac)["data"]["valid"])
        self.assertFalse(t.verify_signed_data("pii", hash_input=b64("massage"), hmac=mac)["data"]["valid"])
        self.assertFalse(t.verify_signed_data("pan", hash_input=b64("message"), hmac=mac)["data"]["valid"])

    def test_sign_and_verify_with_keys_made_in_the_hsm(self):
        t = self.app.secrets.transit
        reader = logged_in("auditor").secrets.transit  # key descriptions need keys:read
        for name, kind in (("receipts", "ecdsa-p256"), ("docs", "ed25519")):
            key = reader.read_key(name)["data"]
            self.assertEqual(key["type"], kind)
            self.assertTrue(key["supports_signing"])
            self.assertTrue(key["keys"]["1"]["public_key"])
            self.assertIn(name, reader.list_keys()["data"]["keys"])
            sig = t.sign_data(name, hash_input=b64("receipt 42"))["data"]["signature"]
            self.assertTrue(sig.startswith("vault:v1:"))
            ok = t.verify_signed_data(name, hash_input=b64("receipt 42"), signature=sig)
            self.assertTrue(ok["data"]["valid"])
            bad = t.verify_signed_data(name, hash_input=b64("receipt 43"), signature=sig)
            self.assertFalse(bad["data"]["valid"])
        jws = t.sign_data("receipts", hash_input=b64("m"), marshaling_algorithm="jws")["data"]["signature"]
        self.assertTrue(t.verify_signed_data("receipts", hash_input=b64("m"), signature=jws,
                                             marshaling_algorithm="jws")["data"]["valid"])
        batch = t.sign_data("docs", batch_input=[{"input": b64("a"), "reference": "r1"},
                                                 {"input": "not base64!", "reference": "r2"}])
        results = batch["data"]["batch_results"]
        self.assertEqual([r.get("reference") for r in results], ["r1", "r2"])
        self.assertTrue(results[0]["signature"].startswith("vault:v1:"))
        self.assertIn("error", results[1])
        # A keyring does not sign, and a signing key does not encrypt.
        with self.assertRaises(exceptions.InvalidRequest):
            t.sign_data("pii", hash_input=b64("x"))
        with self.assertRaises(exceptions.InvalidRequest):
            t.encrypt_data("receipts", plaintext=b64("x"))
        with self.assertRaises(exceptions.Forbidden):
            logged_in("tokenizer").secrets.transit.sign_data("receipts", hash_input=b64("x"))
        # A rotation (the development app client holds rotate:*) adds a version that signs;
        # the old signature still verifies. Destroying versions is never a client's call.
        t.rotate_key("receipts")
        sig2 = t.sign_data("receipts", hash_input=b64("m"))["data"]["signature"]
        self.assertTrue(sig2.startswith("vault:v2:"))
        self.assertTrue(t.verify_signed_data("receipts", hash_input=b64("m"), signature=jws,
                                             marshaling_algorithm="jws")["data"]["valid"])
        t.update_key_configuration("receipts", deletion_allowed=False)
        with self.assertRaises(exceptions.InvalidRequest):
            t.update_key_configuration("receipts", deletion_allowed=True)
        with self.assertRaises(exceptions.InvalidRequest):
            t.trim_key("receipts", min_version=2)
        with self.assertRaises(exceptions.InvalidRequest):
            t.delete_key("receipts")

    def test_derived_keys_need_their_context(self):
        t = self.app.secrets.transit
        t.create_key("tenants", derived=True)  # exists, derived: a no-op (204)
        ct = t.encrypt_data("tenants", plaintext=b64("row 7"), context=b64("tenant-a"))["data"]["ciphertext"]
        plain = t.decrypt_data("tenants", ciphertext=ct, context=b64("tenant-a"))["data"]["plaintext"]
        self.assertEqual(plain, b64("row 7"))
        with self.assertRaises(exceptions.InvalidRequest):
            t.decrypt_data("tenants", ciphertext=ct, context=b64("tenant-b"))
        with self.assertRaises(exceptions.InvalidRequest):
            t.encrypt_data("tenants", plaintext=b64("row 7"))
        with self.assertRaises(exceptions.InvalidRequest):
            t.create_key("tenants", convergent_encryption=True, derived=True)  # not convergent
        self.assertTrue(logged_in("auditor").secrets.transit.read_key("tenants")["data"]["derived"])
        # A convergent key: the same plaintext and context give the same ciphertext.
        t.create_key("ledger", derived=True, convergent_encryption=True)
        one = t.encrypt_data("ledger", plaintext=b64("acct 9"), context=b64("branch 1"))["data"]["ciphertext"]
        two = t.encrypt_data("ledger", plaintext=b64("acct 9"), context=b64("branch 1"))["data"]["ciphertext"]
        other = t.encrypt_data("ledger", plaintext=b64("acct 9"), context=b64("branch 2"))["data"]["ciphertext"]
        self.assertEqual(one, two)
        self.assertNotEqual(one, other)
        self.assertEqual(t.decrypt_data("ledger", ciphertext=one, context=b64("branch 1"))["data"]["plaintext"], b64("acct 9"))

    def test_permissions_are_the_identitys(self):
        tokenizer = logged_in("tokenizer")
        with self.assertRaises(exceptions.Forbidden):
            tokenizer.secrets.transit.encrypt_data("pii", plaintext=b64("x"))


def random_pan():
    """A random Luhn-valid 16-digit test card number."""
    import random
    digits = [4] + [random.randrange(10) for _ in range(14)]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return "".join(map(str, digits)) + str((10 - total % 10) % 10)


class Transform(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.app = logged_in("app")

    def test_encode_decode_validate_and_metadata_through_a_role(self):
        t = self.app.secrets.transform
        pan = random_pan()
        token = t.encode("pan", value=pan)["data"]["encoded_value"]
        self.assertNotEqual(token, pan)
        self.assertEqual(t.decode("pan", value=token)["data"]["decoded_value"], pan)
        self.assertTrue(t.validate_token("pan", value=token, transformation="pan")["data"]["valid"])
        self.assertEqual(t.retrieve_token_metadata("pan", value=token, transformation="pan")["data"]["metadata"], {})
        self.assertTrue(t.check_tokenization("pan", value=pan, transformation="pan")["data"]["tokenized"])
        self.assertFalse(t.check_tokenization("pan", value=random_pan(), transformation="pan")["data"]["tokenized"])
        with self.assertRaises(exceptions.InvalidRequest):
            t.decode("ssn", value=token)

    def test_batches_and_provisioning_reads(self):
        t = self.app.secrets.transform
        pans = [random_pan() for _ in range(3)]
        out = t.encode("pan", batch_input=[{"value": p, "reference": str(i)} for i, p in enumerate(pans)])
        tokens = [r["encoded_value"] for r in out["data"]["batch_results"]]
        back = t.decode("pan", batch_input=[{"value": tok} for tok in tokens])["data"]["batch_results"]
        self.assertEqual([b["decoded_value"] for b in back], pans)
        self.assertIn("pan", t.list_roles()["data"]["keys"])
        self.assertEqual(t.read_role("pan")["data"]["transformations"], ["pan"])
        self.assertIn("pan", t.list_transformations()["data"]["keys"])
        with self.assertRaises(exceptions.InvalidRequest):
            t.create_or_update_role("new", transformations=["pan"])


class Sys(unittest.TestCase):
    def test_health(self):
        health = client("app").sys.read_health_status(method="GET")
        self.assertTrue(health["initialized"])
        self.assertFalse(health["sealed"])
        self.assertTrue(client("app").sys.is_initialized())


if __name__ == "__main__":
    unittest.main(verbosity=2)
