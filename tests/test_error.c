/*
 * Error vocabulary: cio_strerror and cio_err_name for the codes the API
 * returns, and for unknown codes.
 */
#include "cio_test.h"

#include <limits.h>

struct known {
    int code;
    const char *name;
};

/* Every code the public header documents as a return value. */
static const struct known known[] = {
    {-ECANCELED, "ECANCELED"}, {-ETIMEDOUT, "ETIMEDOUT"}, {-EINVAL, "EINVAL"},
    {-ENOMEM, "ENOMEM"},       {-EPERM, "EPERM"},         {-EBUSY, "EBUSY"},
    {-EALREADY, "EALREADY"},   {-EAGAIN, "EAGAIN"},       {-EDEADLK, "EDEADLK"},
    {-ESHUTDOWN, "ESHUTDOWN"}, {-EINTR, "EINTR"},     {-EREMOTEIO, "EREMOTEIO"},
};

START_TEST(error_names)
{
    const struct known *k = &known[_i];
    ck_assert_str_eq(cio_err_name(k->code), k->name);
    const char *msg = cio_strerror(k->code);
    ck_assert_ptr_nonnull(msg);
    ck_assert_str_ne(msg, "");
    ck_assert_str_ne(msg, "unknown error");
    /* Static: the same pointer every time, not a per-call buffer. */
    ck_assert_ptr_eq(cio_strerror(k->code), msg);
    ck_assert_ptr_eq(cio_err_name(k->code), cio_err_name(k->code));
}
END_TEST

START_TEST(error_distinct)
{
    /* Cancellation and timeout are told apart. */
    ck_assert_str_ne(cio_strerror(-ECANCELED), cio_strerror(-ETIMEDOUT));
    ck_assert_str_ne(cio_err_name(-ECANCELED), cio_err_name(-ETIMEDOUT));
}
END_TEST

START_TEST(error_unknown)
{
    static const int unknown[] = {-99999, -4095, 12345, INT_MIN, INT_MAX};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        ck_assert_ptr_nonnull(cio_strerror(unknown[i]));
        ck_assert_ptr_nonnull(cio_err_name(unknown[i]));
        ck_assert_str_eq(cio_strerror(unknown[i]), "unknown error");
        ck_assert_str_eq(cio_err_name(unknown[i]), "UNKNOWN");
    }
}
END_TEST

START_TEST(error_common_errno)
{
    /* Codes passed through from the system (epoll_ctl, pipes, sockets). */
    ck_assert_str_eq(cio_err_name(-EPIPE), "EPIPE");
    ck_assert_str_eq(cio_err_name(-EIO), "EIO");
    ck_assert_str_eq(cio_err_name(-ENOENT), "ENOENT");
    ck_assert_str_ne(cio_strerror(-EPIPE), "unknown error");
}
END_TEST

static Suite *error_suite(void)
{
    Suite *s = suite_create("error");
    TCase *tc = add_tcase(s, "error", TEST_TIMEOUT);
    tcase_add_loop_test(tc, error_names, 0, (int)(sizeof known / sizeof known[0]));
    tcase_add_test(tc, error_distinct);
    tcase_add_test(tc, error_unknown);
    tcase_add_test(tc, error_common_errno);
    return s;
}

CIO_TEST_MAIN(error_suite)
