// Writes tests/golden/gpt2_tokens.json: a text with characters of every
// Unicode general category (and GPT-2's contractions, whitespace runs,
// numbers, emoji) and the ids the reference encoder gives it (npm
// gpt-3-encoder 1.1.4, a port of OpenAI's encoder.py). tapelm's GPT-2
// tokenizer must give the same ids (tests/test_gpt2_tokenizer.cpp).
//   npm pack gpt-3-encoder@1.1.4 && tar xzf gpt-3-encoder-1.1.4.tgz
//   node tests/golden/gpt2_tokens.js package > tests/golden/gpt2_tokens.json
const path = require('path');
const {encode} = require(path.resolve(process.argv[2]));
const categories = ['Lu', 'Ll', 'Lt', 'Lm', 'Lo', 'Mn', 'Mc', 'Me', 'Nd', 'Nl', 'No', 'Pc', 'Pd', 'Ps', 'Pe', 'Pi',
                    'Pf', 'Po', 'Sm', 'Sc', 'Sk', 'So', 'Zs', 'Zl', 'Zp', 'Cc', 'Cf', 'Co'];
const parts = [];
for (const gc of categories) {
  const re = new RegExp(`\\p{gc=${gc}}`, 'u');
  const picked = [];
  // A few from the start of the category and a few spread over the code space.
  for (let c = 0; c < 0x110000 && picked.length < 12; c += picked.length < 4 ? 1 : 997) {
    if (c >= 0xd800 && c <= 0xdfff) continue;
    if (re.test(String.fromCodePoint(c))) picked.push(String.fromCodePoint(c));
  }
  parts.push(`${gc}: ${picked.join('')} x${picked.join(' ')}y ${picked.slice(0, 3).join('')}abc`);
}
parts.push("I'm sure they'll say it's 'quoted' and we've DON'T 'S 're 've 'd 'll 'M");
parts.push('numbers 123 4.56 7,890 ١٢٣ ⅓ ² 1st 2nd3rd');
parts.push('spaces  two   three\t\ttabs\n\nnewlines\r\n  \n indented \u00a0nbsp \u3000ideographic end   ');
parts.push('emoji 👍🏽 👨‍👩‍👧 🇫🇷 ❤️ café naïve Ångström 東京 서울 Москва العربية हिन्दी ภาษาไทย');
parts.push('code: if (x != y) { return a->b[i] + f(z); } // <|endoftext|> tokens_like_this');
const text = parts.join('\n');
console.log(JSON.stringify({encoder: 'gpt-3-encoder 1.1.4', text, ids: encode(text)}));
