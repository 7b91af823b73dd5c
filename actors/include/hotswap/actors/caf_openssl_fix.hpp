#pragma once

// A workaround for CAF 0.17's OpenSSL transport (libcaf_openssl), needed
// for cluster TLS (docs/cluster-tls.md).
//
// libcaf_openssl classifies the result of every non-blocking SSL call with
// SSL_get_error() but drains the thread's OpenSSL error queue only inside a
// log statement, which Debian's build compiles out (CAF_LOG_LEVEL_QUIET).
// SSL_get_error() answers SSL_ERROR_SSL whenever that queue is not empty, so
// after one TLS connection failed on the multiplexer thread (a peer with a
// foreign certificate, or merely a peer that closed without close_notify:
// "unexpected eof while reading"), the next would-block read of any healthy
// TLS connection on that thread counts as a fatal error and CAF closes it.
// The cluster's links break at random and stay broken.
//
// The fix interposes SSL_get_error in the hotswapd executable: calls from
// libcaf_openssl get the real answer, and after an error answer
// (SSL_ERROR_SSL, SSL_ERROR_SYSCALL) the calling thread's error queue is
// drained, so the error cannot leak into the next connection's
// classification. Calls from any other code (libpq, ...) are passed through
// untouched.

namespace hotswap {

/// Links the interposer into the executable and tells whether the dynamic
/// linker resolves SSL_get_error to it (false: the fix is not in effect).
bool caf_openssl_fix_active();

} // namespace hotswap
