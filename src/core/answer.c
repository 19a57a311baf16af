/* answer.c: a server's response, read once: the result table callers get, its headers and
 * the fields every rule reads (status, nonce, Date, challenge, rate-limit figures, error
 * code), and the one step in which the session learns from it: the server's DPoP nonce, its
 * clock, and the rate-limit bucket the request counted against. Part of the core: no I/O. */
#include <stdlib.h>
#include <string.h>
#include "core/op.h"

/* What a WWW-Authenticate challenge says: a nonce wanted, the token refused, or Okta's "proof
 * already used" (the transport re-sent a request: okta-sdk-golang #554). */
static enum ok_challenge challenge(const char *www) {
  char *err = www ? ok_www_auth_param(www, strlen(www), "error") : NULL;
  char *why = err && strcmp(err, "invalid_dpop_proof") == 0 ? ok_www_auth_param(www, strlen(www), "error_description") : NULL;
  enum ok_challenge said = !err ? SAID_OTHER : strcmp(err, "use_dpop_nonce") == 0 ? SAID_NONCE
                         : strcmp(err, "invalid_token") == 0 ? SAID_INVALID_TOKEN
                         : why && strstr(why, OK_PROOF_REUSED_TEXT) ? SAID_PROOF_REUSED : SAID_OTHER;
  free(err);
  free(why);
  return said;
}

void ok_answer_read(lua_State *L, int in, ok_answer *a) {
  memset(a, 0, sizeof *a);
  lua_getfield(L, in, "status");
  a->status = (long)lua_tointeger(L, -1);
  lua_pop(L, 1);
  ok_result_response(L, in);
  a->ridx = lua_gettop(L);
  lua_getfield(L, a->ridx, "headers");
  a->hidx = lua_gettop(L);
  a->nonce = ok_header(L, a->hidx, "dpop-nonce");
  a->date = ok_header(L, a->hidx, "date");
  a->www = ok_header(L, a->hidx, "www-authenticate");
  a->request_id = ok_header(L, a->hidx, "x-okta-request-id");
  a->rl_limit = ok_header(L, a->hidx, "x-rate-limit-limit");
  a->rl_remaining = ok_header(L, a->hidx, "x-rate-limit-remaining");
  a->rl_reset = ok_header(L, a->hidx, "x-rate-limit-reset");
  a->said = challenge(a->www);
  lua_getfield(L, a->ridx, "body");
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "error");
    if (lua_type(L, -1) != LUA_TSTRING) { lua_pop(L, 1); lua_getfield(L, -1, "errorCode"); }
    a->code = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1); /* the body, in the result table, keeps it alive */
  }
  lua_pop(L, 1);
}

void ok_answer_learn(ok_ctx *c, const ok_answer *a, int is_token) {
  ok_bucket *b;
  int described;
  ok_session_learn(c->s, is_token, a->nonce, a->date, c->now);
  if (is_token) return;
  b = ok_session_bucket(c->s, c->op->bucket);
  described = ok_bucket_observe(ok_session_counted(c->s, b), a->rl_limit, a->rl_remaining, a->rl_reset);
  if (described && b->counted_as[0]) ok_bucket_observe(b, a->rl_limit, a->rl_remaining, a->rl_reset);
  if (c->op->admit.probing) {
    b->probe_until = 0;
    if (described || a->status != 429) ok_admit_probe_learned(c, b, described); /* counted and published */
  }
  /* the probe is over: the others read what it published (and a stale claim would hold back
   * a process that starts later, its window unknown, until the claim's ttl) */
  if (c->op->admit.claim[0]) ok_op_queue_store(c, "delete", c->op->admit.claim, 0, 0);
  c->op->admit.claim[0] = '\0';
  c->op->admit.probing = 0;
}
