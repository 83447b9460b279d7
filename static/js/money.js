// Exact decimal money, as strings in and out. Amounts are counted in hundred-millionths with
// BigInt, exactly as the server stores them, so no float ever touches a balance.

const DECIMALS = 8;
const PATTERN = /^([-+]?)(\d+)(?:\.(\d{1,8}))?$/;

/** "100.5" -> 10050000000n; null if the text is not a plain decimal with at most 8 places. */
export function parseMoney(text) {
  const m = PATTERN.exec(String(text).trim());
  if (!m) return null;
  return BigInt(`${m[1]}${m[2]}${(m[3] || '').padEnd(DECIMALS, '0')}`);
}

/** 10050000000n -> "100.50": at least two decimals, no trailing zeros beyond them. */
export function formatMoney(atoms) {
  const negative = atoms < 0n;
  const digits = (negative ? -atoms : atoms).toString().padStart(DECIMALS + 1, '0');
  const whole = digits.slice(0, -DECIMALS);
  const frac = digits.slice(-DECIMALS).replace(/0+$/, '').padEnd(2, '0');
  return `${negative ? '-' : ''}${whole}.${frac}`;
}

/** The sum of two money strings, as a money string; null if either is not money. */
export function addMoney(a, b) {
  const x = parseMoney(a);
  const y = parseMoney(b);
  return x === null || y === null ? null : formatMoney(x + y);
}

/** "-1000.5" -> "−1,000.50", "25" -> "+25.00": a signed amount for people to read. */
export function signedAmount(text) {
  const atoms = parseMoney(text);
  const [whole, frac] = formatMoney(atoms < 0n ? -atoms : atoms).split('.');
  return `${atoms < 0n ? '−' : '+'}${whole.replace(/\B(?=(\d{3})+$)/g, ',')}.${frac}`;
}

export function isNegative(text) {
  const v = parseMoney(text);
  return v !== null && v < 0n;
}
