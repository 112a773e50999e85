/**
 * Renewal decisions as pure functions of the current time and a certificate's validity window.
 */

/** Renew a leaf once less than this fraction of its lifetime remains. */
export const DEFAULT_RENEW_FRACTION = 1 / 3;

export interface ValidityWindow {
  readonly notBefore: Date;
  readonly notAfter: Date;
}

/** True when the certificate has expired or less than `fraction` of its lifetime is left at `now`. */
export function renewalDue(window: ValidityWindow, now: Date, fraction: number = DEFAULT_RENEW_FRACTION): boolean {
  const lifetime = window.notAfter.getTime() - window.notBefore.getTime();
  const remaining = window.notAfter.getTime() - now.getTime();
  return remaining <= 0 || remaining < lifetime * fraction;
}

/** kubeadm backdates NotBefore by five minutes so that nodes whose clocks run slightly behind accept a fresh certificate. */
export const NOT_BEFORE_BACKDATE_MS = 5 * 60 * 1000;
