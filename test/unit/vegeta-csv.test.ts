import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseCsv } from '../../loadtest/vegeta.js';

describe('vegeta results CSV (loadtest/vegeta.ts)', () => {
  it('reads plain rows, empty fields and a last row without a newline', () => {
    assert.deepEqual(parseCsv('1,200,350,,eyJk\n2,0,10,x,\n3,500,1,y,z'), [
      ['1', '200', '350', '', 'eyJk'],
      ['2', '0', '10', 'x', ''],
      ['3', '500', '1', 'y', 'z'],
    ]);
  });

  it('reads quoted fields as Go\'s encoding/csv writes them: commas, doubled quotes, newlines', () => {
    const text = '1,0,5,"Post ""http://127.0.0.1:1/graphql"": dial tcp, refused",,\r\n2,200,7,"a\nb",QQ==,\n';
    assert.deepEqual(parseCsv(text), [
      ['1', '0', '5', 'Post "http://127.0.0.1:1/graphql": dial tcp, refused', '', ''],
      ['2', '200', '7', 'a\nb', 'QQ==', ''],
    ]);
  });

  it('refuses an unterminated quoted field', () => {
    assert.throws(() => parseCsv('1,"open'), /unterminated/);
  });
});
