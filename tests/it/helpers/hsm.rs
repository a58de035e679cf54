//! The test HSM: the SoftHSM2 token `scripts/test` creates, its PIN, the cross-process
//! object lock, raw PKCS#11 sessions for independent checks, and the fault-injecting
//! module of `tests/faulty-pkcs11`.

use std::path::PathBuf;
use std::sync::OnceLock;

use secrecy::SecretString;

/// The token, module and PIN file of the test HSM, from the environment scripts/test sets.
pub struct TestHsm {
    pub module: PathBuf,
    pub token: String,
    pub pin_file: PathBuf,
}

pub fn test_hsm() -> TestHsm {
    assert!(
        std::env::var_os("SOFTHSM2_CONF").is_some(),
        "SOFTHSM2_CONF is not set: run the tests through scripts/test, which creates the test token"
    );
    let token =
        std::env::var("TOKENVAULT_TEST_HSM_TOKEN").unwrap_or_else(|_| "tokenvault-test".into());
    let pin_file = std::env::var("TOKENVAULT_TEST_HSM_PIN_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/test/hsm-user-pin")
        });
    TestHsm {
        module: "/usr/lib/softhsm/libsofthsm2.so".into(),
        token,
        pin_file,
    }
}

/// The PIN of the test token, for tests that talk PKCS#11 themselves.
pub fn test_pin() -> String {
    std::fs::read_to_string(test_hsm().pin_file)
        .expect("test PIN file")
        .trim()
        .to_owned()
}

/// The `hsm.lock_file` every test vault and process uses.
pub fn hsm_lock_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/hsm-objects.lock")
}

/// Takes the vault's cross-process object lock, as the vault does around every object
/// change and login: a test that writes through a raw session holds it, because SoftHSM2
/// corrupts its token under concurrent writers. Never call into a vault while holding it
/// (the vault takes the same lock through its own file).
pub fn hsm_object_lock() -> std::fs::File {
    let path = hsm_lock_file();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap();
    f.lock().unwrap();
    f
}

/// Raw PKCS#11 access for independent checks: the same module, already initialized
/// and logged in by the vault in this process. Writes through it need `hsm_object_lock`.
pub fn raw_session() -> (cryptoki::context::Pkcs11, cryptoki::session::Session) {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    let _lock = hsm_object_lock();
    let hsm = test_hsm();
    let p = Pkcs11::new(&hsm.module).expect("load module");
    let _ = p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = p
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|s| p.get_token_info(*s).unwrap().label().trim_end() == hsm.token)
        .expect("test token present");
    let session = p.open_rw_session(slot).unwrap();
    let pin = SecretString::from(test_pin());
    match session.login(cryptoki::session::UserType::User, Some(&pin)) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
        }
        Err(e) => panic!("login: {e}"),
    }
    (p, session)
}

/// The fault-injecting PKCS#11 module of `tests/faulty-pkcs11` (a shim around the real
/// SoftHSM2 module), built once per test process with the system C compiler.
pub fn faulty_module() -> PathBuf {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/faulty-pkcs11/faulty_pkcs11.c");
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("libfaultypkcs11-{}.so", std::process::id()));
        let built = std::process::Command::new("cc")
            .args(["-shared", "-fPIC", "-O1", "-I/usr/include/p11-kit-1", "-o"])
            .arg(&out)
            .arg(&src)
            .arg("-ldl")
            .output()
            .expect("a C compiler (cc)");
        assert!(
            built.status.success(),
            "building the fault-injecting PKCS#11 module (needs libp11-kit-dev, which scripts/test installs): {}",
            String::from_utf8_lossy(&built.stderr)
        );
        out
    })
    .clone()
}

/// Puts an AES key labelled `label` in the test token in place of whatever holds that
/// label: a KEK that obeys the vault's key policy, changed by `changes` (later attributes
/// win), as someone holding the user PIN could plant it.
pub fn replace_kek(label: &str, changes: &[cryptoki::object::Attribute]) {
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
    let (_p, session) = raw_session();
    let _lock = hsm_object_lock();
    for h in session
        .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
        .unwrap()
    {
        session.destroy_object(h).unwrap();
    }
    let mut template = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Wrap(true),
        Attribute::Unwrap(true),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
        Attribute::Modifiable(false),
        Attribute::WrapWithTrusted(true),
    ];
    for change in changes {
        let t: AttributeType = change.attribute_type();
        template.retain(|a| a.attribute_type() != t);
        template.push(change.clone());
    }
    // SoftHSM2's file object store answers CKR_GENERAL_ERROR now and then when one
    // thread creates a token object while another reads one (SoftHSM issue #573; seen
    // here in a CI run). This helper plants a key; it is not what a test checks, so such
    // a call is made again, after removing anything the failed call may have left.
    for attempt in 0.. {
        match session.generate_key(&Mechanism::AesKeyGen, &template) {
            Ok(_) => return,
            Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::GeneralError, _))
                if attempt < 5 =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
                for h in session
                    .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
                    .unwrap()
                {
                    session.destroy_object(h).unwrap();
                }
            }
            Err(e) => panic!("planting {label}: {e:?}"),
        }
    }
}
