/*
 * A fault-injecting PKCS#11 module for tests: it loads the real module (SoftHSM2) and
 * forwards every call to it, unless the control file names a fault. The vault loads this
 * library as its `hsm.module`, exactly as it would load a vendor's, so nothing in the
 * vault knows it is being tested.
 *
 * Environment:
 *   FAULTY_PKCS11_MODULE   the real module (default /usr/lib/softhsm/libsofthsm2.so)
 *   FAULTY_PKCS11_CONTROL  a file holding one word, re-read on every call:
 *     ok              forward everything
 *     device_error    every call answers CKR_DEVICE_ERROR
 *     session_invalid every session call answers CKR_SESSION_HANDLE_INVALID
 *                     (an HSM restart: the real sessions are closed, the login is lost)
 *     removed         the token is gone: not listed, CKR_TOKEN_NOT_PRESENT on the slot,
 *                     CKR_DEVICE_REMOVED on sessions (real sessions closed, logged out)
 *     slow <ms>       every call is forwarded after sleeping <ms> milliseconds
 *     unwrap_general_error
 *                     C_UnwrapKey answers CKR_GENERAL_ERROR (a device fault some HSMs
 *                     report this way); every other call is forwarded
 *   Each C_Login is appended to "<control>.log" as "login <rv>", so a test can tell that
 *   the vault logged in again after a fault that logged it out.
 *
 * Only C_GetFunctionList is exported: cryptoki then uses the PKCS#11 2.40 function list.
 * Build: cc -shared -fPIC -I/usr/include/p11-kit-1 -o libfaultypkcs11.so faulty_pkcs11.c -ldl
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <p11-kit/pkcs11.h>

enum fault { F_OK, F_DEVICE_ERROR, F_SESSION_INVALID, F_REMOVED, F_SLOW, F_UNWRAP_GENERAL };

/* What a call touches decides which error a fault gives it. */
enum call { C_SLOTS, C_SESSION, C_UNWRAP };

static CK_FUNCTION_LIST *real;
static CK_FUNCTION_LIST wrapped;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static enum fault last_fault = F_OK;

static enum fault read_fault(long *slow_ms)
{
    const char *path = getenv("FAULTY_PKCS11_CONTROL");
    char word[64] = "ok";
    *slow_ms = 0;
    if (path) {
        FILE *f = fopen(path, "r");
        if (f) {
            if (fscanf(f, "%63s %ld", word, slow_ms) < 1)
                strcpy(word, "ok");
            fclose(f);
        }
    }
    if (!strcmp(word, "device_error"))
        return F_DEVICE_ERROR;
    if (!strcmp(word, "session_invalid"))
        return F_SESSION_INVALID;
    if (!strcmp(word, "removed"))
        return F_REMOVED;
    if (!strcmp(word, "slow"))
        return F_SLOW;
    if (!strcmp(word, "unwrap_general_error"))
        return F_UNWRAP_GENERAL;
    return F_OK;
}

/* A restart or a removal ends every session of the process, which also logs it out. */
static void close_real_sessions(void)
{
    CK_SLOT_ID slots[64];
    CK_ULONG n = 64;
    if (real->C_GetSlotList(CK_FALSE, slots, &n) != CKR_OK)
        return;
    for (CK_ULONG i = 0; i < n; i++)
        real->C_CloseAllSessions(slots[i]);
}

/* The answer a call gets under the current fault, or CKR_OK to forward it. */
static CK_RV fault_for(enum call call)
{
    long slow_ms;
    enum fault f = read_fault(&slow_ms);
    pthread_mutex_lock(&lock);
    if (f != last_fault && (f == F_SESSION_INVALID || f == F_REMOVED))
        close_real_sessions();
    last_fault = f;
    pthread_mutex_unlock(&lock);
    switch (f) {
    case F_OK:
        return CKR_OK;
    case F_DEVICE_ERROR:
        return CKR_DEVICE_ERROR;
    case F_SESSION_INVALID:
        return call != C_SLOTS ? CKR_SESSION_HANDLE_INVALID : CKR_OK;
    case F_REMOVED:
        return call != C_SLOTS ? CKR_DEVICE_REMOVED : CKR_TOKEN_NOT_PRESENT;
    case F_SLOW: {
        struct timespec ts = { slow_ms / 1000, (slow_ms % 1000) * 1000000L };
        nanosleep(&ts, NULL);
        return CKR_OK;
    }
    case F_UNWRAP_GENERAL:
        return call == C_UNWRAP ? CKR_GENERAL_ERROR : CKR_OK;
    }
    return CKR_OK;
}

/* Slot calls. */

static CK_RV w_GetSlotList(CK_BBOOL present, CK_SLOT_ID_PTR list, CK_ULONG_PTR count)
{
    CK_RV rv = fault_for(C_SLOTS);
    if (rv == CKR_TOKEN_NOT_PRESENT && present) {
        *count = 0; /* a removed token is simply not listed */
        return CKR_OK;
    }
    if (rv != CKR_OK && rv != CKR_TOKEN_NOT_PRESENT)
        return rv;
    return real->C_GetSlotList(present, list, count);
}

static CK_RV w_GetSlotInfo(CK_SLOT_ID slot, CK_SLOT_INFO_PTR info)
{
    CK_RV rv = fault_for(C_SLOTS);
    if (rv != CKR_OK && rv != CKR_TOKEN_NOT_PRESENT)
        return rv;
    CK_RV real_rv = real->C_GetSlotInfo(slot, info);
    if (real_rv == CKR_OK && rv == CKR_TOKEN_NOT_PRESENT)
        info->flags &= ~CKF_TOKEN_PRESENT;
    return real_rv;
}

#define SLOT_CALL(name, params, args)      \
    static CK_RV w_##name params           \
    {                                      \
        CK_RV rv = fault_for(C_SLOTS);     \
        return rv != CKR_OK ? rv : real->C_##name args; \
    }

SLOT_CALL(GetTokenInfo, (CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info), (slot, info))
SLOT_CALL(GetMechanismList, (CK_SLOT_ID slot, CK_MECHANISM_TYPE_PTR list, CK_ULONG_PTR count),
          (slot, list, count))
SLOT_CALL(GetMechanismInfo, (CK_SLOT_ID slot, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO_PTR info),
          (slot, type, info))
SLOT_CALL(OpenSession,
          (CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR app, CK_NOTIFY notify,
           CK_SESSION_HANDLE_PTR session),
          (slot, flags, app, notify, session))

/* Session calls. */

#define SESSION_CALL(name, params, args)   \
    static CK_RV w_##name params           \
    {                                      \
        CK_RV rv = fault_for(C_SESSION);   \
        return rv != CKR_OK ? rv : real->C_##name args; \
    }

SESSION_CALL(GetSessionInfo, (CK_SESSION_HANDLE s, CK_SESSION_INFO_PTR info), (s, info))
SESSION_CALL(GetAttributeValue,
             (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR t, CK_ULONG n),
             (s, o, t, n))
SESSION_CALL(FindObjectsInit, (CK_SESSION_HANDLE s, CK_ATTRIBUTE_PTR t, CK_ULONG n), (s, t, n))
SESSION_CALL(FindObjects,
             (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE_PTR o, CK_ULONG max, CK_ULONG_PTR n),
             (s, o, max, n))
SESSION_CALL(FindObjectsFinal, (CK_SESSION_HANDLE s), (s))
SESSION_CALL(DestroyObject, (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o), (s, o))
SESSION_CALL(GenerateKey,
             (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR t, CK_ULONG n,
              CK_OBJECT_HANDLE_PTR k),
             (s, m, t, n, k))
SESSION_CALL(GenerateKeyPair,
             (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR pt, CK_ULONG pn,
              CK_ATTRIBUTE_PTR vt, CK_ULONG vn, CK_OBJECT_HANDLE_PTR pk, CK_OBJECT_HANDLE_PTR vk),
             (s, m, pt, pn, vt, vn, pk, vk))
SESSION_CALL(WrapKey,
             (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE w, CK_OBJECT_HANDLE k,
              CK_BYTE_PTR out, CK_ULONG_PTR out_len),
             (s, m, w, k, out, out_len))
static CK_RV w_UnwrapKey(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE u,
                         CK_BYTE_PTR in, CK_ULONG in_len, CK_ATTRIBUTE_PTR t, CK_ULONG n,
                         CK_OBJECT_HANDLE_PTR k)
{
    CK_RV rv = fault_for(C_UNWRAP);
    return rv != CKR_OK ? rv : real->C_UnwrapKey(s, m, u, in, in_len, t, n, k);
}
SESSION_CALL(SignInit, (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k), (s, m, k))
SESSION_CALL(Sign,
             (CK_SESSION_HANDLE s, CK_BYTE_PTR d, CK_ULONG dn, CK_BYTE_PTR sig, CK_ULONG_PTR sn),
             (s, d, dn, sig, sn))
SESSION_CALL(GenerateRandom, (CK_SESSION_HANDLE s, CK_BYTE_PTR out, CK_ULONG n), (s, out, n))

static CK_RV w_Login(CK_SESSION_HANDLE s, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin, CK_ULONG len)
{
    CK_RV rv = fault_for(C_SESSION);
    if (rv == CKR_OK)
        rv = real->C_Login(s, user, pin, len);
    const char *control = getenv("FAULTY_PKCS11_CONTROL");
    if (control) {
        char path[4096];
        snprintf(path, sizeof path, "%s.log", control);
        FILE *f = fopen(path, "a");
        if (f) {
            fprintf(f, "login 0x%lx\n", (unsigned long)rv);
            fclose(f);
        }
    }
    return rv;
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
    if (!list)
        return CKR_ARGUMENTS_BAD;
    pthread_mutex_lock(&lock);
    if (!real) {
        const char *path = getenv("FAULTY_PKCS11_MODULE");
        void *lib = dlopen(path ? path : "/usr/lib/softhsm/libsofthsm2.so", RTLD_NOW | RTLD_LOCAL);
        CK_C_GetFunctionList get = lib ? (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList") : NULL;
        if (!get || get(&real) != CKR_OK) {
            real = NULL;
            pthread_mutex_unlock(&lock);
            return CKR_GENERAL_ERROR;
        }
        wrapped = *real;
        wrapped.C_GetSlotList = w_GetSlotList;
        wrapped.C_GetSlotInfo = w_GetSlotInfo;
        wrapped.C_GetTokenInfo = w_GetTokenInfo;
        wrapped.C_GetMechanismList = w_GetMechanismList;
        wrapped.C_GetMechanismInfo = w_GetMechanismInfo;
        wrapped.C_OpenSession = w_OpenSession;
        wrapped.C_GetSessionInfo = w_GetSessionInfo;
        wrapped.C_Login = w_Login;
        wrapped.C_GetAttributeValue = w_GetAttributeValue;
        wrapped.C_FindObjectsInit = w_FindObjectsInit;
        wrapped.C_FindObjects = w_FindObjects;
        wrapped.C_FindObjectsFinal = w_FindObjectsFinal;
        wrapped.C_DestroyObject = w_DestroyObject;
        wrapped.C_GenerateKey = w_GenerateKey;
        wrapped.C_GenerateKeyPair = w_GenerateKeyPair;
        wrapped.C_WrapKey = w_WrapKey;
        wrapped.C_UnwrapKey = w_UnwrapKey;
        wrapped.C_SignInit = w_SignInit;
        wrapped.C_Sign = w_Sign;
        wrapped.C_GenerateRandom = w_GenerateRandom;
        wrapped.C_GetFunctionList = C_GetFunctionList;
    }
    pthread_mutex_unlock(&lock);
    *list = &wrapped;
    return CKR_OK;
}
