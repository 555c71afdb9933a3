"""Certificates for the integration tests, made at test time with the
openssl command (EC P-256, a few milliseconds each) in a test's
directory: a test CA, certificates it signs, self-signed ones, and
curl-style public key pins."""

import base64
import hashlib
import os
import subprocess

from harness import check


def openssl(env, *args, stdin=None):
    """Runs the openssl command in env's directory; its stdout."""
    r = subprocess.run(("openssl",) + args, cwd=env.dir, input=stdin,
                       capture_output=True, timeout=30)
    check(r.returncode == 0, "openssl %s failed (%d): %s"
          % (" ".join(args), r.returncode,
             r.stderr.decode(errors="replace").strip()[-400:]))
    return r.stdout


def ec_key(env, name):
    openssl(env, "genpkey", "-algorithm", "EC", "-pkeyopt",
            "ec_paramgen_curve:P-256", "-out", name)
    return env.path(name)


class Certs:
    """Makes certificates and keys in env's directory: the CA (ca.crt,
    ca.key) on first use, certificates signed by it, self-signed ones,
    and pins."""

    def __init__(self, env):
        self.env = env

    def ca(self):
        if not os.path.exists(self.env.path("ca.crt")):
            ec_key(self.env, "ca.key")
            openssl(self.env, "req", "-x509", "-new", "-key", "ca.key",
                    "-out", "ca.crt", "-days", "2",
                    "-subj", "/CN=Postern test CA",
                    "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        return self.env.path("ca.crt")

    def signed(self, name, san, cn):
        """NAME.crt / NAME.key for san (openssl syntax), signed by the CA."""
        self.ca()
        ec_key(self.env, name + ".key")
        openssl(self.env, "req", "-new", "-key", name + ".key",
                "-out", name + ".csr", "-subj", "/CN=" + cn)
        with open(self.env.path(name + ".ext"), "w") as f:
            f.write("subjectAltName=%s\nbasicConstraints=CA:FALSE\n"
                    "keyUsage=critical,digitalSignature\n"
                    "extendedKeyUsage=serverAuth\n" % san)
        openssl(self.env, "x509", "-req", "-in", name + ".csr",
                "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", name + ".crt", "-days", "2",
                "-extfile", name + ".ext")
        return self.env.path(name + ".crt"), self.env.path(name + ".key")

    def relay(self):
        return self.signed("relay", "IP:127.0.0.1,DNS:localhost",
                           "127.0.0.1")

    def self_signed(self, name="self"):
        """NAME.crt / NAME.key, self-signed, for 127.0.0.1 and
        localhost."""
        ec_key(self.env, name + ".key")
        openssl(self.env, "req", "-x509", "-new", "-key", name + ".key",
                "-out", name + ".crt", "-days", "2",
                "-subj", "/CN=127.0.0.1",
                "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost")
        return self.env.path(name + ".crt"), self.env.path(name + ".key")

    def pin(self, cert):
        """sha256//BASE64 of the certificate's public key, computed the way
        docs/relay.md says."""
        pub = openssl(self.env, "x509", "-in", cert, "-pubkey", "-noout")
        der = openssl(self.env, "pkey", "-pubin", "-outform", "der",
                      stdin=pub)
        digest = openssl(self.env, "dgst", "-sha256", "-binary", stdin=der)
        b64 = openssl(self.env, "enc", "-base64", stdin=digest)
        pin = "sha256//" + b64.decode().strip()
        # The same from Python, so that the command in the docs is
        # checked rather than trusted.
        want = base64.b64encode(hashlib.sha256(der).digest()).decode()
        check(pin == "sha256//" + want, "openssl pin %s != %s" % (pin, want))
        return pin
