//! JSON Web Signatures as Solid-OIDC uses them: compact JWS parsing, the
//! asymmetric algorithms ring can verify, public JWKs and their RFC 7638
//! thumbprints. Nothing here fetches or trusts anything; callers decide
//! which key a signature must come from.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::signature::{self, UnparsedPublicKey};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The longest compact JWS accepted (access tokens and proofs are far smaller).
pub const MAX_JWS: usize = 16 * 1024;

/// Signature algorithms accepted, as listed in `WWW-Authenticate: … algs=`.
/// Symmetric algorithms and `none` are never accepted; ES512 is missing
/// because ring cannot verify it.
pub const ALGORITHMS: &str = "ES256 ES384 PS256 PS384 PS512 RS256 RS384 RS512 EdDSA";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Es256,
    Es384,
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    EdDsa,
}

impl Alg {
    pub fn parse(name: &str) -> Option<Alg> {
        Some(match name {
            "ES256" => Alg::Es256,
            "ES384" => Alg::Es384,
            "RS256" => Alg::Rs256,
            "RS384" => Alg::Rs384,
            "RS512" => Alg::Rs512,
            "PS256" => Alg::Ps256,
            "PS384" => Alg::Ps384,
            "PS512" => Alg::Ps512,
            "EdDSA" => Alg::EdDsa,
            _ => return None,
        })
    }
}

/// A compact JWS split into its parts, not yet verified.
#[derive(Debug)]
pub struct Jws<'a> {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
    /// `base64url(header) "." base64url(claims)`: what the signature covers.
    pub signing_input: &'a str,
    pub signature: Vec<u8>,
}

impl Jws<'_> {
    /// The header's `alg`, if it is one this server accepts.
    pub fn alg(&self) -> Result<Alg, String> {
        match self.header.get("alg").and_then(Value::as_str) {
            Some(name) => Alg::parse(name)
                .ok_or_else(|| format!("the signature algorithm {name:?} is not accepted")),
            None => Err("the header has no \"alg\"".into()),
        }
    }

    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(Value::as_str)
    }

    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// A numeric claim in whole seconds (fractions are cut off).
    pub fn claim_secs(&self, name: &str) -> Option<i64> {
        let v = self.claims.get(name)?;
        v.as_i64().or_else(|| v.as_f64().map(|f| f as i64))
    }
}

/// Splits a compact JWS and decodes its header and claims.
pub fn parse(token: &str) -> Result<Jws<'_>, String> {
    if token.len() > MAX_JWS {
        return Err(format!("it is longer than {MAX_JWS} bytes"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("it is not a compact JWS (three base64url parts)".into());
    };
    let object = |part: &str, what: &str| -> Result<Map<String, Value>, String> {
        let bytes = B64
            .decode(part)
            .map_err(|_| format!("its {what} is not base64url"))?;
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(format!("its {what} is not a JSON object")),
        }
    };
    let header = object(h, "header")?;
    let claims = object(c, "payload")?;
    if s.is_empty() {
        return Err("it is unsigned".into());
    }
    let signature = B64
        .decode(s)
        .map_err(|_| "its signature is not base64url".to_string())?;
    Ok(Jws {
        header,
        claims,
        signing_input: &token[..h.len() + 1 + c.len()],
        signature,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Material {
    P256(Vec<u8>),
    P384(Vec<u8>),
    Rsa { n: Vec<u8>, e: Vec<u8> },
    Ed25519(Vec<u8>),
}

/// A public key from a JWK, with its RFC 7638 thumbprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    material: Material,
    /// base64url(SHA-256) of the key's required members, as `cnf.jkt` holds it.
    pub thumbprint: String,
}

/// Reads a public JWK. Private members are refused: a key that carries them
/// was leaked by whoever sent it.
pub fn public_key(jwk: &Map<String, Value>) -> Result<PublicKey, String> {
    let member = |name: &str| -> Result<&str, String> {
        jwk.get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("the key has no \"{name}\""))
    };
    let bytes = |name: &str| -> Result<Vec<u8>, String> {
        B64.decode(member(name)?)
            .map_err(|_| format!("the key's \"{name}\" is not base64url"))
    };
    if ["d", "p", "q", "dp", "dq", "qi", "k"]
        .iter()
        .any(|m| jwk.contains_key(*m))
    {
        return Err("the key contains private key material".into());
    }
    let digest = |canonical: String| B64.encode(Sha256::digest(canonical.as_bytes()));
    match member("kty")? {
        "EC" => {
            let crv = member("crv")?;
            let (x, y) = (bytes("x")?, bytes("y")?);
            let size = match crv {
                "P-256" => 32,
                "P-384" => 48,
                other => return Err(format!("the curve {other:?} is not supported")),
            };
            if x.len() != size || y.len() != size {
                return Err(format!("the key's coordinates do not fit {crv}"));
            }
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(4);
            point.extend(&x);
            point.extend(&y);
            let thumbprint = digest(format!(
                r#"{{"crv":"{crv}","kty":"EC","x":"{}","y":"{}"}}"#,
                member("x")?,
                member("y")?
            ));
            let material = if size == 32 {
                Material::P256(point)
            } else {
                Material::P384(point)
            };
            Ok(PublicKey {
                material,
                thumbprint,
            })
        }
        "RSA" => {
            let (n, e) = (bytes("n")?, bytes("e")?);
            if n.len() < 256 {
                return Err("RSA keys shorter than 2048 bits are not accepted".into());
            }
            let thumbprint = digest(format!(
                r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                member("e")?,
                member("n")?
            ));
            Ok(PublicKey {
                material: Material::Rsa { n, e },
                thumbprint,
            })
        }
        "OKP" => {
            if member("crv")? != "Ed25519" {
                return Err("only the Ed25519 OKP curve is supported".into());
            }
            let x = bytes("x")?;
            if x.len() != 32 {
                return Err("the Ed25519 key is not 32 bytes".into());
            }
            let thumbprint = digest(format!(
                r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                member("x")?
            ));
            Ok(PublicKey {
                material: Material::Ed25519(x),
                thumbprint,
            })
        }
        other => Err(format!("the key type {other:?} is not supported")),
    }
}

impl PublicKey {
    /// Whether this key can make signatures of `alg`.
    pub fn fits(&self, alg: Alg) -> bool {
        matches!(
            (&self.material, alg),
            (Material::P256(_), Alg::Es256)
                | (Material::P384(_), Alg::Es384)
                | (
                    Material::Rsa { .. },
                    Alg::Rs256 | Alg::Rs384 | Alg::Rs512 | Alg::Ps256 | Alg::Ps384 | Alg::Ps512
                )
                | (Material::Ed25519(_), Alg::EdDsa)
        )
    }

    /// Checks `signature` over `input` with this key under `alg`.
    pub fn verify(&self, alg: Alg, input: &[u8], sig: &[u8]) -> Result<(), String> {
        if !self.fits(alg) {
            return Err("the key does not match the signature algorithm".into());
        }
        let ok = match &self.material {
            Material::P256(point) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(input, sig)
            }
            Material::P384(point) => {
                UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point)
                    .verify(input, sig)
            }
            Material::Ed25519(x) => {
                UnparsedPublicKey::new(&signature::ED25519, x).verify(input, sig)
            }
            Material::Rsa { n, e } => {
                let params = match alg {
                    Alg::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    Alg::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    Alg::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    Alg::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
                    Alg::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
                    _ => &signature::RSA_PSS_2048_8192_SHA512,
                };
                signature::RsaPublicKeyComponents { n, e }.verify(params, input, sig)
            }
        };
        ok.map_err(|_| "the signature does not verify".to_string())
    }
}

/// base64url(SHA-256(text)), as `ath` holds the hash of an access token.
pub fn sha256_b64(text: &str) -> String {
    B64.encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

    fn key() -> EcdsaKeyPair {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap()
    }

    fn jwk(kp: &EcdsaKeyPair) -> Map<String, Value> {
        let p = kp.public_key().as_ref();
        serde_json::json!({"kty":"EC","crv":"P-256","x":B64.encode(&p[1..33]),"y":B64.encode(&p[33..])})
            .as_object()
            .unwrap()
            .clone()
    }

    fn sign(kp: &EcdsaKeyPair, header: Value, claims: Value) -> String {
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = kp.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", B64.encode(sig.as_ref()))
    }

    #[test]
    fn an_es256_signature_verifies_with_its_key_only() {
        let (a, b) = (key(), key());
        let token = sign(
            &a,
            serde_json::json!({"alg":"ES256"}),
            serde_json::json!({"x":1}),
        );
        let jws = parse(&token).unwrap();
        let ka = public_key(&jwk(&a)).unwrap();
        let kb = public_key(&jwk(&b)).unwrap();
        let input = jws.signing_input.as_bytes();
        assert!(ka.verify(Alg::Es256, input, &jws.signature).is_ok());
        assert!(kb.verify(Alg::Es256, input, &jws.signature).is_err());
        assert!(ka.verify(Alg::Rs256, input, &jws.signature).is_err());
        let mut flipped = jws.signature.clone();
        flipped[5] ^= 1;
        assert!(ka.verify(Alg::Es256, input, &flipped).is_err());
    }

    #[test]
    fn thumbprints_follow_rfc_7638() {
        // The example key of RFC 7638 section 3.1 and its thumbprint.
        let rsa = serde_json::json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        let k = public_key(rsa.as_object().unwrap()).unwrap();
        assert_eq!(k.thumbprint, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn malformed_and_private_keys_are_refused() {
        assert!(parse("a.b").is_err());
        assert!(parse("e30.e30.").is_err(), "an unsigned token");
        assert!(parse("e30.e30.AA.x").is_err());
        let mut private = jwk(&key());
        private.insert("d".into(), "AAAA".into());
        assert!(public_key(&private).unwrap_err().contains("private"));
        assert_eq!(Alg::parse("none"), None);
        assert_eq!(Alg::parse("HS256"), None);
    }
}
