// What is taken for a phone number in a name that stays readable (an
// upload's directories, the probe's output): a run of 9 or more decimal
// digits of any script. Dates and times are not.
import t from 'tap'
import { holdsPhoneNumber, maskPhoneNumbers } from '../../src/policy/phone-numbers.js'

t.test('runs of 9 or more digits, of any script, are phone numbers; dates and times are not', async (t) => {
  const numbers = ['46701234567', '0701234567', '+46701234567', 'caller_0701234567_x', '101500_46701234599.wav', '123456789', '４６７０１２３４５６７', '٤٦٧٠١٢٣٤٥٦٧', '४६७०१२३४५६७']
  for (const n of numbers) t.ok(holdsPhoneNumber(n), `${n}: taken for a phone number`)
  const readable = ['2026', '11', '29', '20261129', '20261129_101500', '2026-11-29', 'team a', '12345678', '']
  for (const r of readable) t.notOk(holdsPhoneNumber(r), `${r || '(empty)'}: readable`)
})

t.test('masking keeps the first two digits of each run', async (t) => {
  t.equal(maskPhoneNumbers('/calls/46701234567/x/'), '/calls/46…/x/')
  t.equal(maskPhoneNumbers('/a/0701234567_b_0709876543/'), '/a/07…_b_07…/')
  t.equal(maskPhoneNumbers('/2026/11/29/'), '/2026/11/29/', 'dates stay')
  t.equal(maskPhoneNumbers('/４６７０１２３４５６７/'), '/４６…/', 'full-width digits, by character')
  t.equal(maskPhoneNumbers('/x/'), '/x/')
})
